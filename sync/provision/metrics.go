package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/claude-auth-sync/claude-auth-sync/sync/promfile"
)

// PublisherUnit is the root service that publishes the users' metrics into
// the node exporter's textfile directory; provision enables it when a metrics
// dir is configured.
const PublisherUnit = "claude-auth-sync-metrics.service"

// ensureMetricsDirs makes the metrics dir root's (0755: no user may write
// into it, so no user can put a file or a directory in another's name) and
// the user's own directory in it (the user's, 0700), where the user's agent
// writes. Something else in the user's name (a link, another uid's
// directory, a file: left from the shared 1777 layout of before, or made by
// someone) is removed first. It returns what it did, for the user's line.
func ensureMetricsDirs(base string, acct Account, apply bool) ([]string, error) {
	var did []string
	verb := func(done, would string) string {
		if apply {
			return done
		}
		return "would " + would
	}
	fi, err := os.Lstat(base)
	switch {
	case errors.Is(err, os.ErrNotExist):
		did = append(did, fmt.Sprintf("%s %s (root's, 0755)", verb("created", "create"), base))
		if !apply {
			return append(did, fmt.Sprintf("would create %s (%s's, 0700)", promfile.UserDir(base, acct.Name), acct.Name)), nil
		}
		if err := os.MkdirAll(base, 0o755); err != nil {
			return did, fmt.Errorf("make the metrics dir: %w", err)
		}
		if err := os.Chmod(base, 0o755); err != nil {
			return did, fmt.Errorf("make the metrics dir: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("metrics dir: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("metrics dir %s is not a directory (a symlink?); remove it or fix CLAUDE_AUTH_METRICS_DIR", base)
	default:
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 || fi.Mode()&os.ModeSticky != 0 {
			did = append(did, fmt.Sprintf("%s %s root's, mode 0755 (it was uid %d's, %04o: users may no longer write into it, each agent writes into a directory of its own)",
				verb("made", "make"), base, st.Uid, uint32(fi.Mode().Perm())|sticky(fi.Mode())))
			if apply {
				if err := os.Lchown(base, 0, 0); err != nil {
					return did, fmt.Errorf("metrics dir: %w", err)
				}
				if err := os.Chmod(base, 0o755); err != nil {
					return did, fmt.Errorf("metrics dir: %w", err)
				}
			}
		}
	}

	dir := promfile.UserDir(base, acct.Name)
	fi, err = os.Lstat(dir)
	if err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		if fi.IsDir() && int(st.Uid) == acct.UID {
			if fi.Mode().Perm() != 0o700 {
				did = append(did, fmt.Sprintf("%s mode %04o of %s to 0700", verb("changed", "change"), fi.Mode().Perm(), dir))
				if apply {
					if err := os.Chmod(dir, 0o700); err != nil {
						return did, fmt.Errorf("metrics dir: %w", err)
					}
				}
			}
			return did, nil
		}
		did = append(did, fmt.Sprintf("%s the %s of uid %d in place of %s's metrics dir %s", verb("removed", "remove"), promfile.Kind(fi.Mode()), st.Uid, acct.Name, dir))
		if apply {
			// RemoveAll never follows a link (it removes the link itself).
			if err := os.RemoveAll(dir); err != nil {
				return did, fmt.Errorf("remove %s: %w", dir, err)
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return did, fmt.Errorf("metrics dir: %w", err)
	}
	did = append(did, fmt.Sprintf("%s %s (%s's, 0700)", verb("created", "create"), dir, acct.Name))
	if !apply {
		return did, nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return did, fmt.Errorf("make %s: %w", dir, err)
	}
	if err := os.Lchown(dir, acct.UID, acct.GID); err != nil {
		return did, fmt.Errorf("make %s: %w", dir, err)
	}
	return did, os.Chmod(dir, 0o700)
}

func sticky(m os.FileMode) uint32 {
	if m&os.ModeSticky != 0 {
		return 0o1000
	}
	return 0
}

// ensurePublisher enables and starts the metrics publisher once a metrics dir
// is configured (a no-op when it runs).
func (p *provisioner) ensurePublisher(ctx context.Context) (string, error) {
	all, _, err := p.opt.Systemctl.States(ctx, []string{PublisherUnit})
	if err != nil || all {
		return "", err
	}
	if !p.apply {
		return "would enable and start " + PublisherUnit, nil
	}
	if err := p.opt.Systemctl.Enable(ctx, PublisherUnit); err != nil {
		return "", err
	}
	return "enabled and started " + PublisherUnit, nil
}

// metricsPublisherLine starts provision's output line about the publisher.
const metricsPublisherLine = "metrics-publisher"
