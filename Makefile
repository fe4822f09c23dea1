# claude-auth-sync: `make demo` runs it end to end in a sandbox; `make test` runs
# every test (unit, CLI scripts, and e2e against a real Vault server, built once
# and cached in ~/.cache/claude-auth-sync).
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
NFPM     := $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

.PHONY: all build demo test unit e2e vault claude tree tools vet package clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/claude-auth-sync ./cmd/claude-auth-sync

demo:
	bash e2e/demo.sh

# The real Vault server the e2e tests use (first run builds it, ~7 min).
vault:
	@bash e2e/vault/ensure-vault.sh >/dev/null

# The real Claude Code CLIs the interop tests drive, from the npm registry
# (cached in ~/.cache/claude-auth-sync; the tests install them on demand too).
claude:
	@bash e2e/claudecli/ensure-claude.sh 2.1.332 >/dev/null
	@bash e2e/claudecli/ensure-claude.sh 2.1.124 >/dev/null

# The Debian 12 tree the real-systemd tests boot with systemd-nspawn
# (debootstrap once, ~1-2 min, cached in ~/.cache/claude-auth-sync).
tree: tools
	@bash e2e/systemd/ensure-tree.sh >/dev/null

# Debian tools the packaging and real-systemd tests use (rpm to inspect the
# .rpm, systemd-analyze to verify units, systemd-nspawn and debootstrap to boot
# a real systemd, man-db and groff to render the man page, prometheus (with
# promtool) and prometheus-node-exporter to check the alert rules and read the
# published metrics); installed only when missing, and only as root.
tools:
	@missing=""; command -v rpm >/dev/null 2>&1 || missing="$$missing rpm"; \
	command -v man >/dev/null 2>&1 || missing="$$missing man-db"; \
	command -v groff >/dev/null 2>&1 || missing="$$missing groff-base"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v systemd-nspawn >/dev/null 2>&1 || missing="$$missing systemd-container"; \
	command -v debootstrap >/dev/null 2>&1 || missing="$$missing debootstrap"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v prometheus-node-exporter >/dev/null 2>&1 || missing="$$missing prometheus-node-exporter"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "make test needs:$$missing (apt-get install$$missing)"; exit 1; fi; \
		echo "installing$$missing"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null; \
	fi

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

test: tools vault claude tree vet
	VAULT_BIN="$$(bash e2e/vault/ensure-vault.sh)" $(GO) test -count=1 -timeout 30m ./...

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: vault
	VAULT_BIN="$$(bash e2e/vault/ensure-vault.sh)" $(GO) test -count=1 -v ./e2e/...

# deb and rpm versions must start with a digit and rpm's may hold no "-":
# v1.2.3 -> 1.2.3, v1.2.3-4-gabc -> 1.2.3.4.gabc. An untagged build (VERSION is
# a commit's abbreviated hash, maybe -dirty) -> 0.0~git<commit date, UTC>.<hash>[.dirty]:
# "~" sorts it below every release, the date orders such builds. A hash may
# start with a digit, so it is told from a tag by naming a commit and no tag.
PKG_VERSION ?= $(shell v='$(VERSION:v%=%)'; h="$${v%-dirty}"; \
	case "$$h" in ("" | *[!0-9a-f]*) ;; (*) \
		c="$$(git rev-parse -q --verify "$$h^{commit}" 2>/dev/null)"; \
		case "$$c" in ("$$h"*) \
			git rev-parse -q --verify "refs/tags/$$h" >/dev/null 2>&1 || \
			v="0.0~git$$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d "$$c").$$v" ;; esac ;; esac; \
	case "$$v" in ([0-9]*) ;; (*) v="0.0~git.$$v" ;; esac; echo "$$v" | tr -- '-' '.')

# The man page, shell completions, copyright and changelog are made from the
# built binary (its command table, its modules) and the version, never kept
# by hand beside it.
package: build
	mkdir -p dist
	rm -f dist/*.deb dist/*.rpm
	SOURCE_DATE_EPOCH="$$(git log -1 --format=%ct 2>/dev/null || date +%s)" dist/claude-auth-sync help --man > dist/claude-auth-sync.1
	gzip -9nf dist/claude-auth-sync.1
	dist/claude-auth-sync completion bash > dist/claude-auth-sync.bash
	dist/claude-auth-sync completion zsh > dist/_claude-auth-sync
	dist/claude-auth-sync completion fish > dist/claude-auth-sync.fish
	GO='$(GO)' sh packaging/doc/copyright.sh dist/claude-auth-sync > dist/copyright
	sh packaging/doc/changelog.sh '$(PKG_VERSION)' '$(VERSION)' > dist/changelog
	gzip -9nf dist/changelog
	VERSION='$(PKG_VERSION)' $(NFPM) package --config nfpm.yaml --packager deb --target dist/
	VERSION='$(PKG_VERSION)' $(NFPM) package --config nfpm.yaml --packager rpm --target dist/

clean:
	rm -rf dist

# The fault-injection and adversarial suite (e2e/faults_*_test.go) at the full
# counts reported in docs/reliability.md: 500 kill -9 iterations and the
# others scaled from FAULT_ITERATIONS. Needs root (tmpfs mounts, test OS users).
# Also runs the engine's packages and the in-process agent under the race
# detector, and fails if any token shape shows up anywhere in the test output.
FAULT_ITERATIONS ?= 500
FAULTS_LOG ?= /tmp/claude-auth-sync-faults.log
.PHONY: faults fuzz
faults: vault
	$(GO) test -race -count=1 ./sync/... ./lock/... ./watcher/...
	VAULT_BIN="$$(bash e2e/vault/ensure-vault.sh)" $(GO) test -race -count=1 -run 'TestFaultClockJumps|TestAgentClockSteppedBack' ./e2e/
	VAULT_BIN="$$(bash e2e/vault/ensure-vault.sh)" CLAUDE_AUTH_FAULT_ITERATIONS=$(FAULT_ITERATIONS) \
		$(GO) test -count=1 -timeout 90m -v -run 'TestFault' ./e2e/ > $(FAULTS_LOG) 2>&1; rc=$$?; \
		grep -E '^(--- |ok |FAIL|PASS|e2e: )|FAULT-REPORT' $(FAULTS_LOG); \
		if grep -Eq 'sk-ant-o[ar]t01-[A-Za-z0-9_-]{12}|hvs\.[A-Za-z0-9_-]{20}' $(FAULTS_LOG); then \
			echo "faults: a token shape appears in the test output ($(FAULTS_LOG))"; rc=1; fi; \
		exit $$rc

# Every fuzz target for FUZZTIME each (CI: the default; a long run: make fuzz
# FUZZTIME=10m). A crasher lands in testdata/fuzz/ of its package, where plain
# `go test` replays it from then on.
FUZZTIME ?= 15s
FUZZ_TARGETS := ./sync/credentials:FuzzParseMerge ./sync/store:FuzzDocDecode ./sync/provision:FuzzRoster \
	./sync/oauth:FuzzParseToken ./sync/oauth:FuzzRefreshResponse ./sync/printable:FuzzString
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "fuzz $$fn ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg; \
	done
