# claude-auth-sync: `make demo` runs it end to end in a sandbox; `make test` runs
# every test (unit, CLI scripts, and e2e against a real Vault server, built once
# and cached in ~/.cache/claude-auth-sync).
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
NFPM     := $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

.PHONY: all build demo test unit e2e vault vet package clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/claude-auth-sync ./cmd/claude-auth-sync

demo:
	bash e2e/demo.sh

# The real Vault server the e2e tests use (first run builds it, ~7 min).
vault:
	@bash e2e/vault/ensure-vault.sh >/dev/null

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

test: vault vet
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
