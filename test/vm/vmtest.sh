#!/usr/bin/env bash
# make vmtest: the test suite inside QEMU VMs booted with Debian's cloud
# kernels, one VM per package and kernel (test/vm/vmexec is the go test
# -exec wrapper). See docs/vmtest.md.
#
#   KERNELS="5.10 6.1 6.12"   the kernels (series fetched by test/vm/fetch.sh)
#   VMTEST_PKGS=./...         the packages
#   VMTEST_FLAGS=             more go test flags, e.g. "-run TestIPv6"
#   VMTEST_CACHE=.cache/vmtest
#   VMTEST_NONFATAL=          kernels whose failures are reported but do not
#                             fail the run, e.g. "5.10" while known failures
#                             there are being fixed
#
# Without qemu, busybox or a kernel it skips (exit 0) saying so, except
# under CI=true, where that fails. Logs: $VMTEST_CACHE/logs/KERNEL.log.
set -uo pipefail
cd "$(dirname "$0")/../.."

GO=${GO:-go}
KERNELS=${KERNELS:-5.10 6.1 6.12}
PKGS=${VMTEST_PKGS:-./...}
FLAGS=${VMTEST_FLAGS:-}
CACHE=${VMTEST_CACHE:-.cache/vmtest}
NONFATAL=" ${VMTEST_NONFATAL:-} "
# cmd/twload's tests build twload with the go command, which the guest has
# not: they exercise the load generator, not the kernel, and run on the host.
EXCLUDE=${VMTEST_EXCLUDE:-github.com/twtrace/twtrace/cmd/twload}
ci=false
[ "${CI:-}" = true ] && ci=true

# missing WHAT: a skip outside CI, a failure under CI=true.
missing() {
	if $ci; then
		echo "vmtest: FAIL: $* (CI=true: the VM tests cannot be skipped)" >&2
		exit 1
	fi
	echo "vmtest: SKIP: $*"
	exit 0
}

if ! command -v qemu-system-x86_64 >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing: qemu-system-x86"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
	fi
	command -v qemu-system-x86_64 >/dev/null || missing "no qemu-system-x86_64 (apt-get install qemu-system-x86)"
fi

# shellcheck disable=SC2086
test/vm/fetch.sh "$CACHE" $KERNELS
[ -x "$CACHE/busybox/busybox" ] || missing "no static busybox in $CACHE/busybox (see the messages above)"
have=
for k in $KERNELS; do
	if [ -s "$CACHE/kernels/$k/vmlinuz" ]; then
		have="$have $k"
	elif $ci; then
		echo "vmtest: FAIL: kernel $k could not be fetched (CI=true)" >&2
		exit 1
	else
		echo "vmtest: SKIP: kernel $k could not be fetched (see the messages above)"
	fi
done
[ -n "$have" ] || missing "no kernel could be fetched"

mkdir -p bin "$CACHE/logs"
CGO_ENABLED=0 $GO build -o bin/vmexec ./test/vm/vmexec || exit 1
CGO_ENABLED=0 $GO build -o bin/twtrace ./cmd/twtrace || exit 1
vmexec=$PWD/bin/vmexec
# shellcheck disable=SC2086
pkgs=$($GO list $PKGS | grep -vxF -e "${EXCLUDE// / -e }") || exit 1
[ -n "$pkgs" ] || missing "no package to test in $PKGS"

# summarize LOG: one line per package (top-level tests passed, skipped,
# failed), then what each failed test printed, and the wrapper's own
# messages (a VM that failed), from go test -v's output.
summarize() {
	awk '
	function flush(result, pkg, t) {
		printf "  %-4s %-48s %3d passed %3d skipped %3d failed %s\n", result, pkg, pass, skip, fail, t
		pass = skip = fail = 0
	}
	/^=== RUN   [^\/]*$/ { n = 0 }
	/^ / && n < 30 { buf[n++] = $0 }
	/^--- PASS/ { pass++ }
	/^--- SKIP/ { skip++ }
	/^--- FAIL/ {
		fail++
		fails[nf++] = $0
		for (i = 0; i < n; i++) fails[nf++] = buf[i]
		n = 0
	}
	/^(vmexec: [^c]|vmexec: cannot|panic: |\*\*\* Test killed)/ { fails[nf++] = $0 }
	/^ok  \t/ { flush("ok", $2, $3); next }
	/^FAIL\t/ { flush("FAIL", $2, $3); next }
	END { for (i = 0; i < nf; i++) print "    " fails[i] }
	' "$1"
}

status=0
for k in $have; do
	log=$CACHE/logs/$k.log
	echo "== kernel $k: $(cat "$CACHE/kernels/$k/VERSION")"
	start=$(date +%s)
	{
		echo "== twtrace doctor"
		"$vmexec" -kernel "$k" bin/twtrace doctor 2>&1
		echo "== go test"
		# shellcheck disable=SC2086
		CGO_ENABLED=0 $GO test -p 1 -count=1 -v -timeout 60m -exec "$vmexec -kernel $k" $FLAGS $pkgs 2>&1
	} >"$log"
	rc=$?
	note=
	if [ $rc != 0 ]; then
		case $NONFATAL in
		*" $k "*) note=" (VMTEST_NONFATAL: not failing the run)" ;;
		*) status=1 ;;
		esac
	fi
	echo "kernel $k: go test exit $rc in $(($(date +%s) - start)) s$note"
	echo "  doctor: $(grep -m1 '^Can twtrace run here?' "$log" || echo 'no verdict (see the log)')"
	summarize "$log"
	echo "  log: $log"
done
exit $status
