#!/usr/bin/env bash
# Installs what the tests need on a Debian/Ubuntu machine and downloads the
# Go modules. Idempotent and quiet: a machine that already has everything does
# no apt work. Safe to run as root (CI) or as a normal user (uses sudo).
#
# Debian packages are installed without starting any system service: a
# temporary policy-rc.d makes invoke-rc.d/deb-systemd-invoke refuse to start
# daemons, so the tests start their own sshd/postgres/mariadb instances.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MIN_GO_MAJOR=1
MIN_GO_MINOR=26

# Keep in sync with what the integration tests look up (testenv.LookPath).
# make/gcc/libc6-dev: `make test` and `go test -race` (cgo).
# libnss3-tools: certutil, which makes the console test browser's NSS
# database trusting the cluster CA.
PACKAGES=(
	make
	gcc
	libc6-dev
	openssh-server
	openssh-client
	openssl
	postgresql
	postgresql-client
	mariadb-server
	mariadb-client
	stunnel4
	chromium
	libnss3-tools
	fonts-dejavu-core
	iperf3
	tmux
	iproute2
	nftables
	dnsutils
	sudo
)

log() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: ERROR: %s\n' "$*" >&2; exit 1; }

# --- Debian packages -------------------------------------------------------

# Globals (not locals) because the EXIT trap may run after install_packages.
SUDO=()
POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=""

restore_policy() {
	if [ -n "$POLICY_BACKUP" ]; then
		"${SUDO[@]}" mv -f "$POLICY_BACKUP" "$POLICY"
	else
		"${SUDO[@]}" rm -f "$POLICY"
	fi
}

installed() {
	# dpkg -s also succeeds for removed-but-not-purged packages, so check the
	# Status line. (Not `dpkg -s | grep -q`: grep exiting early makes dpkg die
	# of SIGPIPE, which pipefail turns into "not installed".)
	local status
	status="$(dpkg -s "$1" 2>/dev/null)" || return 1
	grep -qx 'Status: install ok installed' <<<"$status"
}

install_packages() {
	if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
		log "no dpkg/apt-get (not Debian?): install these yourself if tests skip: ${PACKAGES[*]}"
		return 0
	fi

	local missing=() p
	for p in "${PACKAGES[@]}"; do
		installed "$p" || missing+=("$p")
	done
	if [ "${#missing[@]}" -eq 0 ]; then
		log "Debian packages: all ${#PACKAGES[@]} present"
		return 0
	fi

	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 ||
			die "not root and no sudo: as root run: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
		SUDO=(sudo)
	fi

	local aptlog
	aptlog="$(mktemp -t install-deps-apt.XXXXXX.log)"

	# Do not let package postinst scripts start daemons (exit 101 = action
	# forbidden). Keep any pre-existing policy-rc.d and restore it afterwards.
	# A leftover backup means an earlier run was killed mid-install: the
	# backup is the original, the current file is ours.
	local mark='# temporary, written by scripts/install-deps.sh'
	if [ -e "$POLICY.install-deps.bak" ]; then
		POLICY_BACKUP="$POLICY.install-deps.bak"
	elif [ -e "$POLICY" ] && ! grep -qxF "$mark" "$POLICY"; then
		POLICY_BACKUP="$POLICY.install-deps.bak"
		"${SUDO[@]}" cp -p "$POLICY" "$POLICY_BACKUP"
	fi
	trap restore_policy EXIT
	trap 'exit 130' INT TERM HUP
	printf '#!/bin/sh\n%s\nexit 101\n' "$mark" | "${SUDO[@]}" tee "$POLICY" >/dev/null
	"${SUDO[@]}" chmod 0755 "$POLICY"

	local apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600)

	log "apt-get update"
	if ! "${apt[@]}" update >"$aptlog" 2>&1; then
		cat "$aptlog" >&2
		die "apt-get update failed (log above)"
	fi

	log "apt-get install ${missing[*]}"
	if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$aptlog" 2>&1; then
		tail -n 60 "$aptlog" >&2
		die "apt-get install failed (full log: $aptlog)"
	fi

	restore_policy
	trap - EXIT INT TERM HUP
	rm -f "$aptlog"

	for p in "${missing[@]}"; do
		installed "$p" || die "package $p still not installed after apt-get install"
	done
}

# --- Go ---------------------------------------------------------------------

check_go() {
	local want="go${MIN_GO_MAJOR}.${MIN_GO_MINOR}"
	command -v go >/dev/null 2>&1 ||
		die "go not found in PATH: install Go >= ${want} from the official Go downloads (e.g. into /usr/local/go) and add /usr/local/go/bin to PATH"

	local v
	v="$(go env GOVERSION 2>/dev/null || true)"
	# e.g. go1.26.8, go1.26rc1, go1.27.0 X:foo; devel builds are accepted.
	if [[ "$v" =~ ^go([0-9]+)\.([0-9]+) ]]; then
		local major="${BASH_REMATCH[1]}" minor="${BASH_REMATCH[2]}"
		if ((major < MIN_GO_MAJOR || (major == MIN_GO_MAJOR && minor < MIN_GO_MINOR))); then
			die "$(command -v go) is $v but this module needs >= ${want}: install Go ${MIN_GO_MAJOR}.${MIN_GO_MINOR} or newer and put it first in PATH (or set GOTOOLCHAIN=${want}.0 if toolchain downloads are allowed)"
		fi
	elif [[ "$v" != devel* ]]; then
		die "cannot parse Go version '$v' from $(command -v go); need >= ${want}"
	fi
	log "go: $v ok"
}

# --- Vault ------------------------------------------------------------------

# The real Vault server of the tests, built from the Go module proxy
# (integration/vault, a module of its own; see its README). A large build
# (13-15 min on two cores cold, ~4.5 GB of compiler memory): once per
# machine into the cache, reused while its version matches, never inside a
# test's timeout. Linked as `vault` on the PATH for the tests.
VAULT_VERSION=v1.21.0

build_vault() {
	local cache="${XDG_CACHE_HOME:-$HOME/.cache}/tunnel"
	local bin="$cache/vault-$VAULT_VERSION"
	if [ -x "$bin" ] && "$bin" version 2>/dev/null | grep -q "^Vault ${VAULT_VERSION},"; then
		log "vault: ${VAULT_VERSION} cached at $bin"
	else
		log "vault: building ${VAULT_VERSION} from the Go module proxy into $bin (once per machine: 13-15 min on two cores)"
		mkdir -p "$cache"
		local start=$SECONDS
		(cd integration/vault && go build -trimpath -ldflags "-s -w" -o "$bin.tmp" github.com/hashicorp/vault) ||
			die "the Vault build failed (integration/vault; see its README)"
		mv -f "$bin.tmp" "$bin"
		"$bin" version | grep -q "^Vault ${VAULT_VERSION}," || die "the Vault just built does not say it is ${VAULT_VERSION}"
		log "vault: built in $((SECONDS - start)) s"
	fi
	local link=/usr/local/bin/vault
	if [ "$(readlink "$link" 2>/dev/null || true)" != "$bin" ]; then
		if [ -w /usr/local/bin ]; then
			ln -sfn "$bin" "$link"
		elif command -v sudo >/dev/null 2>&1; then
			sudo ln -sfn "$bin" "$link"
		else
			log "vault: cannot link $link (not root, no sudo): put $bin on your PATH as vault, or the Vault tests skip"
			return 0
		fi
		log "vault: $link -> $bin"
	fi
}

install_packages
check_go
log "go mod download"
go mod download
build_vault
