// Command name-squatter listens on each abstract unix socket name it is
// given (a leading '@' for the abstract namespace) and never accepts, prints
// how many it holds, and keeps them until its stdin closes. Run as another OS
// user, it is a hostile user taking the names an agent might look for first.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
)

func main() {
	var held []*net.UnixListener
	for _, name := range os.Args[1:] {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
		if err != nil {
			fmt.Printf("error %v on %q after %d names\n", err, name, len(held))
			os.Exit(1)
		}
		held = append(held, ln)
	}
	fmt.Printf("holding %d\n", len(held))
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, ln := range held {
		ln.Close()
	}
}
