// Command claude-standin is the `claude` stand-in used by the demo and the fast
// tests (see e2e/standin).
package main

import (
	"os"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/standin"
)

func main() { os.Exit(standin.Main(os.Args[1:], os.Stdout, os.Stderr)) }
