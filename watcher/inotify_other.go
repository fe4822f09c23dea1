//go:build !linux

package watcher

import "errors"

// Without inotify the watcher falls back to its rescan alone (see Run).
func openInotify() (source, error) {
	return nil, errors.New("inotify is Linux only")
}
