package main

import (
	"fmt"
	"io"
)

// demo is filled in with the SAML provider (issue 3).
func demo(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "portcullis demo: not available yet")
	return 1
}
