# claude-auth-sync: `make demo` runs it end to end in a sandbox; `make test` runs
# every test (unit, CLI scripts, and e2e against a real Vault server, built once
# and cached in ~/.cache/claude-auth-sync).
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
NFPM     := $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

.PHONY: all build demo test unit e2e vault claude tools vet package clean

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

# Debian tools the packaging test uses (rpm to inspect the .rpm, systemd-analyze
# to verify units); installed only when missing, and only as root.
tools:
	@missing=""; command -v rpm >/dev/null 2>&1 || missing="$$missing rpm"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "make test needs:$$missing (apt-get install$$missing)"; exit 1; fi; \
		echo "installing$$missing"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null; \
	fi

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

test: tools vault claude vet
	VAULT_BIN="$$(bash e2e/vault/ensure-vault.sh)" $(GO) test -count=1 -timeout 30m ./...

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: vault
	VAULT_BIN="$$(bash e2e/vault/ensure-vault.sh)" $(GO) test -count=1 -v ./e2e/...

# deb and rpm versions must start with a digit and rpm's may hold no "-":
# v1.2.3 -> 1.2.3, v1.2.3-4-gabc -> 1.2.3.4.gabc, abc1234-dirty -> 0.0~git.abc1234.dirty.
PKG_VERSION ?= $(shell v='$(VERSION:v%=%)'; case "$$v" in ([0-9]*) ;; (*) v="0.0~git.$$v" ;; esac; echo "$$v" | tr -- '-' '.')

package: build
	mkdir -p dist
	rm -f dist/*.deb dist/*.rpm
	VERSION='$(PKG_VERSION)' $(NFPM) package --config nfpm.yaml --packager deb --target dist/
	VERSION='$(PKG_VERSION)' $(NFPM) package --config nfpm.yaml --packager rpm --target dist/

clean:
	rm -rf dist
