#!/usr/bin/env bash
# make vmtest: the test suite inside QEMU VMs booted with Debian's cloud
# kernels, one VM per package and kernel (test/vm/vmexec is the go test
# -exec wrapper). See docs/vmtest.md.
#
#   KERNELS="5.10 6.1 6.12 arm64-6.12"   the kernels (series fetched by test/vm/fetch.sh);
#                             arm64-6.12 boots Debian's arm64 kernel in
#                             qemu-system-aarch64, with GOARCH=arm64 tests
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
KERNELS=${KERNELS:-5.10 6.1 6.12 arm64-6.12}
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

# A kernel series' architecture (GOARCH): arm64-6.12 is arm64's 6.12.
arch_of() {
	case $1 in
	arm64-*) echo arm64 ;;
	*) echo amd64 ;;
	esac
}

# qemu_of ARCH: the qemu binary, then the Debian package holding it.
qemu_of() {
	case $1 in
	arm64) echo qemu-system-aarch64 qemu-system-arm ;;
	*) echo qemu-system-x86_64 qemu-system-x86 ;;
	esac
}

# busybox_of ARCH: where fetch.sh puts ARCH's static busybox.
busybox_of() {
	case $1 in
	amd64) echo "$CACHE/busybox/busybox" ;;
	*) echo "$CACHE/busybox/$1/busybox" ;;
	esac
}

# twtrace_of ARCH: the twtrace binary doctor runs in ARCH's guests.
twtrace_of() {
	case $1 in
	amd64) echo bin/twtrace ;;
	*) echo "bin/linux_$1/twtrace" ;;
	esac
}

arches=
for k in $KERNELS; do
	a=$(arch_of "$k")
	case " $arches " in *" $a "*) ;; *) arches="$arches $a" ;; esac
done
# Without any qemu, nothing is fetched; without one architecture's, its
# kernels are skipped below.
noqemu= someqemu=false
for a in $arches; do
	read -r qemu pkg <<<"$(qemu_of "$a")"
	if ! command -v "$qemu" >/dev/null; then
		if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
			echo "installing: $pkg"
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
		fi
	fi
	if command -v "$qemu" >/dev/null; then
		someqemu=true
	else
		noqemu="$noqemu, $qemu (apt-get install $pkg)"
	fi
done
$someqemu || missing "no ${noqemu#, }"

# shellcheck disable=SC2086
test/vm/fetch.sh "$CACHE" $KERNELS
have=
for k in $KERNELS; do
	a=$(arch_of "$k")
	read -r qemu pkg <<<"$(qemu_of "$a")"
	if ! command -v "$qemu" >/dev/null; then
		why="no $qemu (apt-get install $pkg)"
	elif [ ! -x "$(busybox_of "$a")" ]; then
		why="no static $a busybox in $(dirname "$(busybox_of "$a")") (see the messages above)"
	elif [ ! -s "$CACHE/kernels/$k/vmlinuz" ]; then
		why="kernel $k could not be fetched (see the messages above)"
	else
		have="$have $k"
		continue
	fi
	if $ci; then
		echo "vmtest: FAIL: kernel $k: $why (CI=true)" >&2
		exit 1
	fi
	echo "vmtest: SKIP: kernel $k: $why"
done
[ -n "$have" ] || missing "no kernel can boot here (see the messages above)"

mkdir -p bin "$CACHE/logs"
# vmexec runs in each package's folder: give it the cache by absolute path.
TWTRACE_VM_CACHE=$(cd "$CACHE" && pwd)
export TWTRACE_VM_CACHE
CGO_ENABLED=0 $GO build -o bin/vmexec ./test/vm/vmexec || exit 1
for a in $arches; do
	CGO_ENABLED=0 GOOS=linux GOARCH=$a $GO build -o "$(twtrace_of "$a")" ./cmd/twtrace || exit 1
done
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
	a=$(arch_of "$k")
	echo "== kernel $k: $(cat "$CACHE/kernels/$k/VERSION")"
	start=$(date +%s)
	{
		echo "== twtrace doctor"
		"$vmexec" -kernel "$k" "$(twtrace_of "$a")" doctor 2>&1
		echo "== go test"
		# shellcheck disable=SC2086
		CGO_ENABLED=0 GOARCH=$a $GO test -p 1 -count=1 -v -timeout 60m -exec "$vmexec -kernel $k" $FLAGS $pkgs 2>&1
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
