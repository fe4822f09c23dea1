package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"
	"golang.org/x/sync/errgroup"

	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// StatusUnknown is the status of a row with no (readable) health: a user
// with a backup but no agent that reports yet (an older version), or a
// health value that does not parse.
const StatusUnknown = "UNKNOWN"

// DefaultWorkers is how many users' metadata are read at once.
const DefaultWorkers = 16

// Row is one host of one user, or the one row of a user no host reports for.
type Row struct {
	User   string
	HostID string // "" when no host reports for the user
	Health
	// Owner: the main document's owner_host is this host.
	Owner bool
	// Note says why a row has no health ("no health yet", "no main
	// document", "unreadable health: …").
	Note string
}

// DueAt is the end that matters for the row's login: the setup token's in
// setup-token mode, else the login's deadline (zero when unknown).
func (r Row) DueAt() time.Time {
	if !r.SetupExpires.IsZero() {
		return r.SetupExpires
	}
	return r.Deadline
}

// Reader lists the users under <Mount>/metadata/<Base> and reads each one's
// metadata. It never reads a data path, so it needs no right to any login.
type Reader struct {
	Client  *vault.Client
	Mount   string // "secret"
	Base    string // "workstation/claude-users": the configured path without "/{user}"
	Workers int    // DefaultWorkers when 0
}

func (r *Reader) metaPath(rel string) string {
	return strings.TrimSuffix(r.Mount+"/metadata/"+r.Base, "/") + "/" + rel
}

// Users lists the users with a document (a user whose only documents are
// per-host ones is listed as "name/" and counts too).
func (r *Reader) Users(ctx context.Context) ([]string, error) {
	where := strings.TrimSuffix(r.metaPath(""), "/")
	s, err := r.Client.Logical().ListWithContext(ctx, where)
	if err != nil {
		return nil, classify(r.Client, "list "+where, err)
	}
	var users []string
	if s != nil && s.Data != nil {
		keys, _ := s.Data["keys"].([]any)
		for _, k := range keys {
			name, _ := k.(string)
			if name = strings.TrimSuffix(name, "/"); name != "" {
				users = append(users, name)
			}
		}
	}
	slices.Sort(users)
	return slices.Compact(users), nil
}

// Read returns every user's rows, unsorted. The first error (refused,
// unreachable) stops the reading and is returned.
func (r *Reader) Read(ctx context.Context) ([]Row, error) {
	users, err := r.Users(ctx)
	if err != nil {
		return nil, err
	}
	perUser := make([][]Row, len(users))
	g, gctx := errgroup.WithContext(ctx)
	workers := r.Workers
	if workers <= 0 {
		workers = DefaultWorkers
	}
	g.SetLimit(workers)
	for i, u := range users {
		g.Go(func() error {
			rows, err := r.user(gctx, u)
			perUser[i] = rows
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return slices.Concat(perUser...), nil
}

// user reads one user's main document's metadata: one row per host that
// reports, or one UNKNOWN row saying why there is none.
func (r *Reader) user(ctx context.Context, user string) ([]Row, error) {
	if err := store.CheckSegment("user", user); err != nil {
		// Not a name provision gives (a dot segment, '%', '/' …): reading
		// it would ask for another path than its own.
		return []Row{{User: CleanField(user), Health: Health{Status: StatusUnknown}, Note: "not read: the name is not one safe path segment"}}, nil
	}
	where := r.metaPath(user)
	s, err := r.Client.Logical().ReadWithContext(ctx, where)
	if err != nil {
		return nil, classify(r.Client, "read "+where, err)
	}
	if s == nil || s.Data == nil {
		return []Row{{User: user, Health: Health{Status: StatusUnknown}, Note: "no main document"}}, nil
	}
	custom, _ := s.Data["custom_metadata"].(map[string]any)
	owner, _ := custom[OwnerKey].(string)
	var rows []Row
	for key, v := range custom {
		host, ok := HostOfKey(key)
		if !ok {
			continue
		}
		row := Row{User: user, HostID: CleanField(host), Owner: host == owner}
		val, _ := v.(string)
		h, err := ParseHealth(val)
		if err != nil {
			row.Status, row.Note = StatusUnknown, "unreadable health: "+err.Error()
		} else {
			row.Health = h
			if row.Status == "" {
				row.Status = StatusUnknown
			}
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		rows = append(rows, Row{User: user, Health: Health{Status: StatusUnknown}, Note: "no health yet (no agent of this version has reported)"})
	}
	return rows, nil
}

// classify gives Vault's answer one of the store's sentinels: a 403 is
// ErrForbidden (this token may not read the fleet), the rest as the agent
// classifies it (unreachable, misconfigured address or TLS).
func classify(c *vault.Client, op string, err error) error {
	var re *vault.ResponseError
	if errors.As(err, &re) && re.StatusCode == 403 {
		return fmt.Errorf("%s: %w (403): this token may not read the fleet's metadata; use a fleet-reader token (provision --fleet-reader-token FILE) or an admin token", op, store.ErrForbidden)
	}
	return store.ClassifyError(c, op, err)
}

// RenewIfPeriodic renews c's token when it is periodic and renewable (a
// fleet-reader token), so one in regular use never reaches the end of its
// period; any other token is left as it is. It returns the token's
// policies. Best effort: an error only means the next run tries again.
func RenewIfPeriodic(ctx context.Context, c *vault.Client) ([]string, error) {
	s, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil || s == nil {
		return nil, err
	}
	policies, _ := s.TokenPolicies()
	renewable, _ := s.TokenIsRenewable()
	if p := fmt.Sprint(s.Data["period"]); p == "0" || p == "<nil>" || !renewable {
		return policies, nil
	}
	_, err = c.Auth().Token().RenewSelfWithContext(ctx, 0)
	return policies, err
}
