#!/usr/bin/env bash
# Fetches Debian's cloud kernels (vmlinuz only) and a static busybox into a
# cache folder, for `make vmtest`. Idempotent: what is already in the cache
# is kept; REFRESH=1 looks for newer kernels.
#
#   test/vm/fetch.sh CACHE SERIES...      SERIES: 5.10, 6.1 or 6.12
#
# It uses apt with a private configuration and state under CACHE/apt (the
# system's /etc/apt and /var/lib/apt are not touched) and needs neither root
# nor anything but Debian's mirror. Result, per series:
#   CACHE/kernels/SERIES/vmlinuz   the kernel
#   CACHE/kernels/SERIES/config    its build configuration
#   CACHE/kernels/SERIES/VERSION   "package version", e.g.
#                                  "linux-image-6.1.0-37-cloud-amd64-unsigned 6.1.140-1"
#   CACHE/busybox/busybox          busybox-static's binary (bookworm)
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

# The suites each kernel series comes from, newest kernels in the last.
suites_of() {
	case $1 in
	5.10) echo "debian:bullseye debian:bullseye-updates debian-security:bullseye-security" ;;
	6.1) echo "debian:bookworm debian:bookworm-updates debian-security:bookworm-security" ;;
	6.12) echo "debian:bookworm-backports debian:bookworm debian-security:bookworm-security" ;;
	busybox) echo "debian:bookworm debian:bookworm-updates debian-security:bookworm-security" ;;
	*) return 1 ;;
	esac
}

# apt_opts NAME: the apt-get/apt-cache options of NAME's private apt
# configuration.
apt_opts() {
	local dir=$cache/apt/$1
	echo "-o Dir::Etc::SourceList=$dir/sources.list -o Dir::Etc::SourceParts=$dir/sources.list.d" \
		"-o Dir::State=$dir/state -o Dir::Cache=$dir/cache -o Dir::State::status=/var/lib/dpkg/status" \
		"-o APT::Sandbox::User=$(id -un) -o Debug::NoLocking=1 -o APT::Architecture=amd64 -o APT::Architectures::=amd64" \
		"-o Acquire::Languages=none -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
}

# apt_setup NAME: writes NAME's sources and updates its package lists once
# (again when the sources changed, or with REFRESH=1).
apt_setup() {
	local name=$1 dir=$cache/apt/$1 s
	mkdir -p "$dir/sources.list.d" "$dir/state/lists/partial" "$dir/cache/archives/partial" || return 1
	: >"$dir/sources.list.new"
	for s in $(suites_of "$name"); do
		echo "deb [arch=amd64 signed-by=$keyring] $mirror/${s%%:*} ${s#*:} main" >>"$dir/sources.list.new"
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

fetch_kernel() {
	local series=$1 dir=$cache/kernels/$1 names pkg abi cand ver tmp
	if [ -s "$dir/vmlinuz" ] && [ -s "$dir/VERSION" ] && [ "${REFRESH:-}" != 1 ]; then
		echo "kernel $series: $(cat "$dir/VERSION") (cached)"
		return 0
	fi
	apt_setup "$series" || return 1
	# linux-image-ABI-cloud-amd64[-unsigned] whose ABI is in the series:
	# 5.10.0-35, 6.1.0-37, 6.12.38+deb12 ... Newest first; a package the
	# index lists may be missing from the mirror's pool (seen with
	# bullseye-security's unsigned images): then the next candidate.
	# shellcheck disable=SC2046
	names=$(apt-cache $(apt_opts "$series") pkgnames linux-image- 2>/dev/null |
		grep -E "^linux-image-${series//./\\.}(\.[0-9]+)?[-+][^-]*(-[0-9]+)?-cloud-amd64(-unsigned)?$")
	if [ -z "$names" ]; then
		echo "fetch: no linux-image-$series*-cloud-amd64 package in $(suites_of "$series")" >&2
		return 1
	fi
	tmp=$cache/kernels/.tmp-$series
	pkg=
	for abi in $(sed -E 's/^linux-image-(.*)-cloud-amd64(-unsigned)?$/\1/' <<<"$names" | sort -urV | head -3); do
		for cand in "linux-image-$abi-cloud-amd64-unsigned" "linux-image-$abi-cloud-amd64"; do
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
		echo "fetch: no linux-image-$series*-cloud-amd64 could be downloaded" >&2
		return 1
	fi
	dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp/x" --wildcards './boot/vmlinuz-*' './boot/config-*' || {
		echo "fetch: no vmlinuz in $pkg" >&2
		return 1
	}
	mkdir -p "$dir" &&
		mv "$tmp"/x/boot/vmlinuz-* "$dir/vmlinuz" &&
		mv "$tmp"/x/boot/config-* "$dir/config" &&
		echo "$pkg $ver" >"$dir/VERSION" || return 1
	rm -rf "$tmp"
	echo "kernel $series: $pkg $ver"
}

fetch_busybox() {
	local dir=$cache/busybox tmp=$cache/busybox.tmp ver
	if [ -x "$dir/busybox" ] && [ "${REFRESH:-}" != 1 ]; then
		return 0
	fi
	apt_setup busybox || return 1
	rm -rf "$tmp" && mkdir -p "$tmp/x" || return 1
	download busybox busybox-static "$tmp" || return 1
	dpkg-deb -x "$tmp"/*.deb "$tmp/x" || return 1
	ver=$(dpkg-deb -f "$tmp"/*.deb Version)
	mkdir -p "$dir" && mv "$tmp/x/bin/busybox" "$dir/busybox" && echo "busybox-static $ver" >"$dir/VERSION" || return 1
	rm -rf "$tmp"
	echo "busybox: busybox-static $ver"
}

status=0
fetch_busybox || { echo "fetch: busybox-static not fetched" >&2; status=1; }
for series in "$@"; do
	if ! suites_of "$series" >/dev/null; then
		echo "fetch: unknown kernel series $series (known: 5.10 6.1 6.12)" >&2
		status=1
		continue
	fi
	fetch_kernel "$series" || { echo "fetch: kernel $series not fetched" >&2; status=1; }
done
exit $status
