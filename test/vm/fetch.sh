#!/usr/bin/env bash
# Fetches Debian's cloud kernels (vmlinuz only) and a static busybox into a
# cache folder, for `make vmtest`. Idempotent: what is already in the cache
# is kept; REFRESH=1 looks for newer kernels.
#
#   test/vm/fetch.sh CACHE SERIES...      SERIES: 5.10, 6.1 or 6.12 (amd64),
#                                          arm64-SERIES: Debian's cloud-arm64
#                                          kernel of SERIES (arm64-6.12 tried)
#
# It uses apt with a private configuration and state under CACHE/apt (the
# system's /etc/apt and /var/lib/apt are not touched) and needs neither root
# nor anything but Debian's mirror. Result, per series:
#   CACHE/kernels/SERIES/vmlinuz   the kernel
#   CACHE/kernels/SERIES/config    its build configuration
#   CACHE/kernels/SERIES/VERSION   "package version", e.g.
#                                  "linux-image-6.1.0-37-cloud-amd64-unsigned 6.1.140-1"
#   CACHE/busybox/busybox          busybox-static's binary (bookworm, amd64)
#   CACHE/busybox/arm64/busybox    the same for arm64, when an arm64-* series
#                                  is asked for
# An arm64 kernel's vmlinuz is kept if qemu-system-aarch64 -kernel boots it
# (Debian's 6.12 is an uncompressed Image; a gzip'd one boots too); an EFI
# zboot image is unpacked here (see arm64_image).
# Exit status: 0 when every series asked for is in the cache, 1 otherwise
# (with one line per missing series on stderr).
set -uo pipefail

if [ $# -lt 2 ]; then
	echo "usage: $0 CACHE SERIES..." >&2
	exit 2
fi
cache=$1
shift
mkdir -p "$cache" || exit 1
cache=$(cd "$cache" && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

# arch_of SERIES: Debian's architecture of a kernel series ("arm64-6.12":
# arm64) or of an apt configuration's name ("busybox-arm64": arm64).
arch_of() {
	case $1 in
	arm64-* | *-arm64) echo arm64 ;;
	*) echo amd64 ;;
	esac
}

# The suites each kernel series comes from, newest kernels in the last; an
# arm64-SERIES series comes from SERIES's suites.
suites_of() {
	case $1 in
	arm64-*) suites_of "${1#arm64-}" ;;
	busybox-arm64) suites_of busybox ;;
	5.10) echo "debian:bullseye debian:bullseye-updates debian-security:bullseye-security" ;;
	6.1) echo "debian:bookworm debian:bookworm-updates debian-security:bookworm-security" ;;
	6.12) echo "debian:bookworm-backports debian:bookworm debian-security:bookworm-security" ;;
	busybox) echo "debian:bookworm debian:bookworm-updates debian-security:bookworm-security" ;;
	*) return 1 ;;
	esac
}

# apt_opts NAME: the apt-get/apt-cache options of NAME's private apt
# configuration, for NAME's architecture only.
apt_opts() {
	local dir=$cache/apt/$1 arch
	arch=$(arch_of "$1")
	echo "-o Dir::Etc::SourceList=$dir/sources.list -o Dir::Etc::SourceParts=$dir/sources.list.d" \
		"-o Dir::State=$dir/state -o Dir::Cache=$dir/cache -o Dir::State::status=/var/lib/dpkg/status" \
		"-o APT::Sandbox::User=$(id -un) -o Debug::NoLocking=1 -o APT::Architecture=$arch -o APT::Architectures::=$arch" \
		"-o Acquire::Languages=none -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
}

# apt_setup NAME: writes NAME's sources and updates its package lists once
# (again when the sources changed, or with REFRESH=1).
apt_setup() {
	local name=$1 dir=$cache/apt/$1 s arch
	arch=$(arch_of "$1")
	mkdir -p "$dir/sources.list.d" "$dir/state/lists/partial" "$dir/cache/archives/partial" || return 1
	: >"$dir/sources.list.new"
	for s in $(suites_of "$name"); do
		echo "deb [arch=$arch signed-by=$keyring] $mirror/${s%%:*} ${s#*:} main" >>"$dir/sources.list.new"
	done
	if ! cmp -s "$dir/sources.list.new" "$dir/sources.list"; then
		rm -f "$dir/updated"
	fi
	mv "$dir/sources.list.new" "$dir/sources.list"
	if [ ! -f "$dir/updated" ] || [ "${REFRESH:-}" = 1 ]; then
		# shellcheck disable=SC2046
		# apt-get update exits 0 when an index could not be fetched: its
		# warnings say so.
		if ! apt-get $(apt_opts "$name") -qq update >"$dir/update.log" 2>&1 ||
			grep -qE '^(E|W): (Failed to fetch|Some index files failed)' "$dir/update.log"; then
			echo "fetch: apt-get update for $name failed: $(grep -m1 -E '^(E|W):' "$dir/update.log" || tail -1 "$dir/update.log")" >&2
			return 1
		fi
		touch "$dir/updated"
	fi
}

# download NAME PACKAGE DEST: downloads PACKAGE's .deb into DEST (a folder).
download() {
	local name=$1 pkg=$2 dest=$3
	rm -f "$dest"/*.deb
	# shellcheck disable=SC2046
	(cd "$dest" && apt-get $(apt_opts "$name") -qq download "$pkg" >"$dest/download.log" 2>&1) || {
		echo "fetch: apt-get download $pkg failed: $(tail -1 "$dest/download.log")" >&2
		return 1
	}
}

# arm64_image FILE: makes FILE an arm64 kernel that qemu-system-aarch64
# -kernel boots: a raw Image (Debian's, up to 6.12 at least) or a gzip'd
# one are kept; an EFI zboot image (CONFIG_EFI_ZBOOT: "MZ", "zimg", the
# payload's offset and size as le32 at 8 and 12, its compression at 24;
# QEMU before 8.0 cannot boot it) is replaced by its unpacked payload.
# Fails, saying why in FILE's folder/why, otherwise.
arm64_image() {
	local f=$1 why=${1%/*}/why off size comp
	case $(od -An -c -j56 -N4 "$f" | tr -d ' '),$(od -An -tx1 -N2 "$f" | tr -d ' '),$(od -An -c -j4 -N4 "$f" | tr -d ' ') in
	ARMd,*) return 0 ;;     # Image: "ARM\x64" at 56
	*,1f8b,*) return 0 ;;   # gzip: qemu unpacks it
	*,4d5a,zimg) ;;         # EFI zboot
	*)
		echo "vmlinuz is neither an arm64 Image, gzip'd, nor an EFI zboot image" >"$why"
		return 1
		;;
	esac
	off=$(od -An -tu4 -j8 -N4 --endian=little "$f" | tr -d ' ')
	size=$(od -An -tu4 -j12 -N4 --endian=little "$f" | tr -d ' ')
	comp=$(od -An -c -j24 -N8 "$f" | tr -d ' ' | sed 's/\\0.*//')
	case $comp in
	gzip) comp="gzip -dc" ;;
	zstd) comp="zstd -dcq" ;;
	xz | lzma) comp="xz -dc" ;;
	*)
		echo "EFI zboot image compressed with ${comp:-nothing known}: unpack it yourself" >"$why"
		return 1
		;;
	esac
	# shellcheck disable=SC2086
	if ! tail -c +$((off + 1)) "$f" | head -c "$size" | $comp >"$f.image" 2>"$why" ||
		[ "$(od -An -c -j56 -N4 "$f.image" | tr -d ' ')" != ARMd ]; then
		echo "EFI zboot image: its payload is no arm64 Image ($(head -1 "$why"))" >"$why"
		return 1
	fi
	mv "$f.image" "$f"
}

fetch_kernel() {
	local series=$1 dir=$cache/kernels/$1 names pkg abi cand ver tmp base arch
	if [ -s "$dir/vmlinuz" ] && [ -s "$dir/VERSION" ] && [ "${REFRESH:-}" != 1 ]; then
		echo "kernel $series: $(cat "$dir/VERSION") (cached)"
		return 0
	fi
	arch=$(arch_of "$series")
	base=${series#arm64-}
	apt_setup "$series" || return 1
	# linux-image-ABI-cloud-ARCH[-unsigned] whose ABI is in the series:
	# 5.10.0-35, 6.1.0-37, 6.12.38+deb12 ... Newest first; a package the
	# index lists may be missing from the mirror's pool (seen with
	# bullseye-security's unsigned images): then the next candidate.
	# shellcheck disable=SC2046
	names=$(apt-cache $(apt_opts "$series") pkgnames linux-image- 2>/dev/null |
		grep -E "^linux-image-${base//./\\.}(\.[0-9]+)?[-+][^-]*(-[0-9]+)?-cloud-$arch(-unsigned)?$")
	if [ -z "$names" ]; then
		echo "fetch: no linux-image-$base*-cloud-$arch package in $(suites_of "$series")" >&2
		return 1
	fi
	tmp=$cache/kernels/.tmp-$series
	pkg=
	for abi in $(sed -E "s/^linux-image-(.*)-cloud-$arch(-unsigned)?\$/\1/" <<<"$names" | sort -urV | head -3); do
		for cand in "linux-image-$abi-cloud-$arch-unsigned" "linux-image-$abi-cloud-$arch"; do
			grep -qx -- "$cand" <<<"$names" || continue
			# shellcheck disable=SC2046
			for ver in $(apt-cache $(apt_opts "$series") show "$cand" 2>/dev/null | sed -n 's/^Version: //p' | sort -urV); do
				rm -rf "$tmp" && mkdir -p "$tmp/x" || return 1
				echo "kernel $series: downloading $cand $ver"
				if download "$series" "$cand=$ver" "$tmp"; then
					pkg=$cand
					break 3
				fi
			done
		done
	done
	if [ -z "$pkg" ]; then
		echo "fetch: no linux-image-$base*-cloud-$arch could be downloaded" >&2
		return 1
	fi
	dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp/x" --wildcards './boot/vmlinuz-*' './boot/config-*' || {
		echo "fetch: no vmlinuz in $pkg" >&2
		return 1
	}
	if [ "$arch" = arm64 ]; then
		arm64_image "$tmp"/x/boot/vmlinuz-* || {
			echo "fetch: $pkg: $(cat "$tmp/x/why")" >&2
			return 1
		}
	fi
	mkdir -p "$dir" &&
		mv "$tmp"/x/boot/vmlinuz-* "$dir/vmlinuz" &&
		mv "$tmp"/x/boot/config-* "$dir/config" &&
		echo "$pkg $ver" >"$dir/VERSION" || return 1
	rm -rf "$tmp"
	echo "kernel $series: $pkg $ver"
}

# fetch_busybox ARCH: busybox-static for ARCH, amd64 in CACHE/busybox (as
# before arm64 was added), others in CACHE/busybox/ARCH.
fetch_busybox() {
	local arch=$1 dir=$cache/busybox name=busybox tmp ver
	if [ "$arch" != amd64 ]; then
		dir=$cache/busybox/$arch name=busybox-$arch
	fi
	tmp=$cache/.tmp-$name
	if [ -x "$dir/busybox" ] && [ "${REFRESH:-}" != 1 ]; then
		return 0
	fi
	apt_setup "$name" || return 1
	rm -rf "$tmp" && mkdir -p "$tmp/x" || return 1
	download "$name" busybox-static "$tmp" || return 1
	dpkg-deb -x "$tmp"/*.deb "$tmp/x" || return 1
	ver=$(dpkg-deb -f "$tmp"/*.deb Version)
	mkdir -p "$dir" && mv "$tmp/x/bin/busybox" "$dir/busybox" && echo "busybox-static $ver" >"$dir/VERSION" || return 1
	rm -rf "$tmp"
	echo "busybox ($arch): busybox-static $ver"
}

status=0
fetch_busybox amd64 || { echo "fetch: busybox-static (amd64) not fetched" >&2; status=1; }
for series in "$@"; do
	if ! suites_of "$series" >/dev/null; then
		echo "fetch: unknown kernel series $series (known: 5.10 6.1 6.12, and arm64-SERIES for each)" >&2
		status=1
		continue
	fi
	arch=$(arch_of "$series")
	if [ "$arch" != amd64 ] && ! fetch_busybox "$arch"; then
		echo "fetch: busybox-static ($arch) not fetched" >&2
		status=1
	fi
	fetch_kernel "$series" || { echo "fetch: kernel $series not fetched" >&2; status=1; }
done
exit $status
