package agent

import (
	"context"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// engineView is the engine as the components' small interfaces name it:
// the pass, backup and restore are the engine's own; refreshing is its
// refresher's and telemetry its reporter's.
type engineView struct{ *engine.Engine }

func (v engineView) ApplyPendingRefresh(ctx context.Context, lin *lineage.Lineage) (refresh.ClaudeResult, error) {
	return v.Refresher.ApplyPending(ctx, lin)
}
func (v engineView) NoteNewLogin(o *credentials.OAuth) { v.Refresher.NoteNewLogin(o) }
func (v engineView) Refresh(ctx context.Context, lin *lineage.Lineage, force bool, saw credentials.Secret) (refresh.ClaudeResult, error) {
	return v.Refresher.Refresh(ctx, lin, force, saw)
}
func (v engineView) RefreshDue(o *credentials.OAuth) time.Time { return v.Refresher.Due(o) }
func (v engineView) RefreshPending() bool                      { return v.Refresher.Pending() }
func (v engineView) LoadCounters() telemetry.Counters          { return v.Telemetry.LoadCounters() }
func (v engineView) CountEvent(st eventlog.Status) telemetry.Counters {
	return v.Telemetry.CountEvent(st)
}
func (v engineView) LoadRecord() *telemetry.Record { return v.Telemetry.LoadRecord() }
func (v engineView) LoadMCPMetrics() telemetry.MCPMetrics {
	return telemetry.LoadMCPMetrics(v.Cfg.StateDir)
}
func (v engineView) PublishMetrics(m telemetry.Metrics) { v.Telemetry.PublishMetrics(m) }
func (v engineView) PublishHealth(ctx context.Context, h fleet.Health) {
	v.Telemetry.PublishHealth(ctx, h)
}
func (v engineView) MergeRecord(r *telemetry.Record) error { return v.Telemetry.MergeRecord(r) }
func (v engineView) CurrentSubject(ctx context.Context, readStore bool) telemetry.CheckSubject {
	return v.Telemetry.CurrentSubject(ctx, readStore)
}
