# tunnel: make help lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -s -w -X github.com/tunnelhq/tunnel/pkg/version.Version=$(VERSION) -X github.com/tunnelhq/tunnel/pkg/version.Commit=$(COMMIT)
FUZZTIME ?= 5s
TEST_TIMEOUT ?= 30m

.PHONY: help deps build dev test check unit fuzz bench fmt vet clean

help: ## show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

deps: ## install what the tests need (Debian packages, Go modules); idempotent
	@bash scripts/install-deps.sh

build: ## build tunnel, tunnel-gateway and tunnel-agent into bin/
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./gateway/cmd/tunnel-gateway ./agent/cmd/tunnel-agent ./client/cmd/tunnel

dev: build ## run a gateway on 127.0.0.1:8443 with embedded defaults and print the admin's credentials
	$(BIN)/tunnel-gateway dev

test: deps check unit fuzz ## everything CI runs: format, vet, unit + integration tests with -race, short fuzzing

check: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit: ## all Go tests (unit and integration) with the race detector, shuffled
	CI=$${CI:-1} $(GO) test -race -shuffle=on -timeout $(TEST_TIMEOUT) ./...

fuzz: ## run every fuzz target for FUZZTIME (default 5s); a crasher fails, an engine failure under load is retried
	@GO='$(GO)' FUZZTIME='$(FUZZTIME)' bash scripts/fuzz.sh

BENCHTIME ?= 200x
bench: ## all benchmarks: login and signing, bastion revocation and tunnel ssh, then the data path against direct, stunnel and ssh -L (writes docs/BENCHMARKS.md)
	@set -o pipefail; { $(GO) test -run '^$$' -bench . -benchmem -benchtime 2000x ./certs/ && \
	   $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./gateway/internal/login/ && \
	   $(GO) test -run '^$$' -bench 'BenchmarkLoginHTTPS' -benchtime $(BENCHTIME) ./integration/ && \
	   CI=1 $(GO) test -run '^$$' -bench '^BenchmarkRevoke$$|BenchmarkSSHTrue' -benchtime 100x ./integration/ ; } | tee bench.out
	$(GO) run ./integration/cmd/tunnel-bench

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

clean: ## remove build outputs
	rm -rf $(BIN) bench.out

WEBUI := gateway/internal/webui
.PHONY: ui
ui: ## rebuild the web console's vendored terminal emulator (@xterm/headless from npm, pinned by package-lock.json) into gateway/internal/webui/static/vendor; needs Node.js, only when it changes
	cd $(WEBUI)/src && npm ci --ignore-scripts --no-audit --no-fund
	mkdir -p $(WEBUI)/static/vendor
	@# The package is CommonJS: wrap it so that it defines window.XtermHeadless.
	{ echo '// @xterm/headless '"$$(node -p 'require("./$(WEBUI)/src/node_modules/@xterm/headless/package.json").version')"' (MIT, see LICENSE-xterm.txt), wrapped by make ui: defines window.XtermHeadless.'; \
	  echo '(function () { var exports = {};'; \
	  sed '/^\/\/# sourceMappingURL=/d' $(WEBUI)/src/node_modules/@xterm/headless/lib-headless/xterm-headless.js; \
	  echo 'window.XtermHeadless = exports; })();'; } > $(WEBUI)/static/vendor/xterm-headless.js
