package demo

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// printInfo tells the user what runs where, who can log in, and what to try.
func printInfo(w io.Writer, info *Info) {
	fmt.Fprintf(w, `portcullis demo: a SAML identity provider, an echo upstream, and portcullis between them.

Open %s/ and sign in at the demo identity provider as:

`, info.URL)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "  username\tpassword\temail\tIdP group\trole")
	for _, u := range info.Users {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", u.Name, u.Password, u.Email, u.Group, u.Role)
	}
	tw.Flush()
	fmt.Fprintf(w, `
The upstream's page shows the headers portcullis sent it (X-Email, X-Groups).
%[1]s/admin is for the admin role only: the annotator gets 403 there.

API calls with their own credentials pass through untouched, with no identity headers:
  curl -H 'Authorization: Token demo' %[1]s/api/server/about
Without credentials they get 401:
  curl -i %[1]s/api/server/about

Behind the proxy:
  identity provider  %[2]s/metadata
  echo upstream      %[3]s
  metrics            %[4]s/metrics

Press Ctrl-C to stop.
`, info.URL, info.IdPURL, info.UpstreamURL, info.AdminURL)
}
