package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/portcullis-proxy/portcullis/proxy"
)

// sessionsTimeout bounds one operator command against Redis.
const sessionsTimeout = 30 * time.Second

// sessions lists or revokes a user's sessions in the Redis session store:
// `portcullis sessions list|revoke --user EMAIL [--config FILE]`.
func sessions(args []string, stdout, stderr io.Writer) int {
	const usageLine = "usage: portcullis sessions list|revoke --user EMAIL [--config FILE]"
	if len(args) == 0 || (args[0] != "list" && args[0] != "revoke") {
		fmt.Fprintln(stderr, usageLine)
		return 2
	}
	verb := args[0]
	fs := newFlags("sessions "+verb, stderr)
	path := configFlag(fs)
	user := fs.String("user", "", "the user's email address")
	if fs.Parse(args[1:]) != nil {
		return 2
	}
	if *user == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, usageLine)
		return 2
	}
	cfg, err := loadChecked(*path)
	if err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	st, err := proxy.OpenSessions(cfg) // proxy.ErrSessionsNeedRedis with the cookie store
	if err != nil {
		fmt.Fprintln(stderr, "portcullis sessions:", err)
		return 1
	}
	defer st.Redis().Close()
	ctx, cancel := context.WithTimeout(context.Background(), sessionsTimeout)
	defer cancel()

	if verb == "revoke" {
		n, err := st.RevokeByEmail(ctx, *user)
		if err != nil {
			fmt.Fprintln(stderr, "portcullis sessions revoke:", err)
			return 1
		}
		fmt.Fprintf(stdout, "revoked %d session(s) of %s\n", n, *user)
		return 0
	}
	list, err := st.ListByEmail(ctx, *user)
	if err != nil {
		fmt.Fprintln(stderr, "portcullis sessions list:", err)
		return 1
	}
	if len(list) == 0 {
		fmt.Fprintf(stdout, "no sessions of %s\n", *user)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tIDP\tEMAIL\tCREATED\tEXPIRES")
	for _, s := range list {
		// A prefix tells sessions apart; the whole ID is of no use to an
		// operator (cookies carry it sealed).
		fmt.Fprintf(tw, "%s…\t%s\t%s\t%s\t%s\n", s.ID[:min(8, len(s.ID))], s.IdP, s.Email,
			s.Created.UTC().Format(time.RFC3339), s.Expires.UTC().Format(time.RFC3339))
	}
	tw.Flush()
	return 0
}
