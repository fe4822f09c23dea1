// Command inotify-hog takes inotify instances until the kernel refuses one
// (the per-user fs.inotify.max_user_instances limit), prints how many it holds,
// and keeps them until its stdin closes. Run as a test OS user, it leaves that
// user no inotify instance at all, without touching the machine-wide sysctl.
package main

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	held := 0
	var err error
	for held < 1<<16 {
		if _, err = unix.InotifyInit1(unix.IN_CLOEXEC); err != nil {
			break
		}
		held++
	}
	// The limit is per user: EMFILE from inotify_init1 means it is reached
	// (ENFILE/ENOMEM would be the machine's limits, not the one we want).
	if err != unix.EMFILE {
		fmt.Printf("error %v after %d instances\n", err, held)
		os.Exit(1)
	}
	fmt.Printf("holding %d\n", held)
	_, _ = io.Copy(io.Discard, os.Stdin)
}
