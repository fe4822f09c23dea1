package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/promfile"
)

// defaultTextfileDir is Debian's prometheus-node-exporter textfile directory.
const defaultTextfileDir = "/var/lib/prometheus/node-exporter"

const publishMetricsHelp = `Usage: claude-auth-sync publish-metrics [--once] [--from DIR] [--to DIR]

Root: publish every user's metrics for the node exporter. Each agent writes
its metrics into a directory of its own user's, DIR/<user>/claude_auth_sync.prom
under the metrics dir (CLAUDE_AUTH_METRICS_DIR; root's, 0755; provision makes
the users' directories). This reads each user's file (a regular file owned by
that user, at most 16 KiB, never through a link, a FIFO never waited on),
keeps only claude-auth-sync's own metrics, labels every series user="<the
file's owner>" whatever the file says, and writes them all as one file,
claude_auth_sync.prom, into the node exporter's textfile directory (--to),
atomically. A refused file (garbage, a second sample, a wrong TYPE, NaN,
another metric, a link, a FIFO, too big) publishes nothing for that user:
claude_auth_sync_metrics_publish_error{user="<user>"} 1 and one WARN line say
so; the other users' series are published as ever.

Without --once it keeps running (claude-auth-sync-metrics.service): it watches
the users' directories with inotify and publishes within a fraction of a
second of an agent's write, and once a minute besides.

Exit status: 0 published (or stopped by SIGTERM); 1 the publish failed; 2
usage error; 78 no metrics dir configured, or it is writable by users.
`

func publishMetricsFlags(fs *flagSet) action {
	systemConfig := fs.String("config", "", "system config `file` (env CLAUDE_AUTH_SYSTEM_CONFIG; default: "+config.SystemFile+")")
	from := fs.String("from", "", "the metrics `dir`, one directory per user (default: CLAUDE_AUTH_METRICS_DIR)")
	to := fs.String("to", defaultTextfileDir, "the node exporter's textfile `dir`")
	once := fs.Bool("once", false, "publish once and exit")
	return func(args []string, stdout, stderr io.Writer) int {
		if code, ok := parse(fs, args, stdout, stderr, publishMetricsHelp); !ok {
			return code
		}
		source := *from
		if source == "" {
			sysPath := cmp.Or(*systemConfig, os.Getenv("CLAUDE_AUTH_SYSTEM_CONFIG"), config.SystemFile)
			file, err := config.ReadFile(sysPath)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				fmt.Fprintf(stderr, "claude-auth-sync publish-metrics: %v\n", err)
				return exitConfig
			}
			source = cmp.Or(os.Getenv("CLAUDE_AUTH_METRICS_DIR"), file["CLAUDE_AUTH_METRICS_DIR"])
		}
		if source == "" {
			fmt.Fprintf(stderr, "claude-auth-sync publish-metrics: no metrics dir: set CLAUDE_AUTH_METRICS_DIR in %s or give --from\n", config.SystemFile)
			return exitConfig
		}
		p := &promfile.Publisher{Source: source, Target: *to, Log: stderr}
		if *once {
			if _, err := p.Publish(); err != nil {
				if errors.Is(err, promfile.ErrSharedSource) {
					return exitConfig
				}
				return 1
			}
			return 0
		}
		ctx, cancel := signalContext()
		defer cancel()
		if err := p.Run(ctx); err != nil {
			fmt.Fprintf(stderr, "claude-auth-sync publish-metrics: %v\n", err)
			return 1
		}
		return 0
	}
}
