# Shared helpers for the integration tests (sourced). Every test works in its own temporary
# directory, removed by the EXIT trap however the test ends.
set -u
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
PLOOP=${PLOOP:-$ROOT/build/bin/ploop}
PLOOP_SAN=${PLOOP_SAN:-$ROOT/build/san/bin/ploop}
PLOOP_IO=${PLOOP_IO:-$ROOT/build/bin/ploop-io}
MKCORRUPT=${MKCORRUPT:-$ROOT/build/bin/mkcorrupt}
ORACLE=${ORACLE:-$ROOT/tests/tools/ploop-oracle}
# Sanitizer reports fail the process instead of only printing.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=99}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:exitcode=99}

T=$(mktemp -d "${TMPDIR:-/tmp}/ploop-test.XXXXXX")
_cleanups=()
# at_exit CMD: run CMD when the test exits (last registered runs first).
at_exit() { _cleanups=("$*" "${_cleanups[@]}"); }
_run_cleanups() {
	local c
	for c in "${_cleanups[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
	rm -rf "$T"
}
trap _run_cleanups EXIT
trap 'exit 130' INT TERM
cd "$T"
# The python3 first in PATH may be a version manager's shim (pyenv's takes 0.3 s to start, ten
# times Debian's python3): the tests use Debian's.
if [ -x /usr/bin/python3 ] && [ "$(command -v python3)" != /usr/bin/python3 ]; then
	mkdir "$T/.bin" && ln -s /usr/bin/python3 "$T/.bin/python3" && PATH=$T/.bin:$PATH
fi

_failures=0
ok() { echo "ok $*"; }
not_ok() { echo "not ok $*"; _failures=$((_failures + 1)); }
# check NAME CMD...: runs CMD; ok when it exits 0.
check() {
	local name=$1
	shift
	if "$@"; then ok "$name"; else not_ok "$name"; fi
}
# expect_rc NAME RC CMD...: ok when CMD exits with RC.
expect_rc() {
	local name=$1 want=$2 rc
	shift 2
	"$@" >/dev/null 2>"$T/.stderr"
	rc=$?
	if [ "$rc" = "$want" ]; then ok "$name"; else
		not_ok "$name (exit $rc, wanted $want: $(head -c 300 "$T/.stderr"))"
	fi
}
# one_line NAME RC CMD...: exits RC with exactly one line on stderr.
one_line() {
	local name=$1 want=$2 rc
	shift 2
	"$@" >/dev/null 2>"$T/.err"
	rc=$?
	if [ "$rc" = "$want" ] && [ "$(wc -l <"$T/.err")" = 1 ]; then ok "$name"; else
		not_ok "$name (exit $rc, wanted $want: $(head -c 300 "$T/.err"))"
	fi
}
finish() { exit $((_failures > 0)); }
# sha FILE: content digest
sha() { sha256sum "$1" | cut -d' ' -f1; }
# random_file PATH MIB: MIB MiB of random bytes
random_file() { head -c "$(($2 * 1048576))" /dev/urandom >"$1"; }
have_oracle() { grep -qx /usr/sbin/ploop /var/lib/dpkg/info/ploop.list 2>/dev/null; }
