#!/usr/bin/env bash
# Builds the Linux 6.1 guest kernel for fwcfg-e500 from Debian's linux-source-6.1 package.
#
# The project's tests and `fwcfg-e500 -kernel vmlinux` boot this kernel; the machine's
# firmware loads it (with the initrd, command line and device tree) through fw_cfg.
# Config: arch/powerpc mpc85xx_smp_defconfig plus scripts/linux/fwcfg-e500.config.
#
# Usage: scripts/build-linux.sh [--print-path] [--force]
#   --print-path  print where vmlinux is (or would be) and exit, without building
#   --force       rebuild even when the cached vmlinux matches the cache key
#
# Everything lives outside the source tree, in
#   CACHE = ${FWCFG_E500_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fwcfg-e500}
#   CACHE/linux-6.1   the unpacked kernel source (left pristine)
#   CACHE/build       the object tree (make O=), kept for incremental rebuilds
#   CACHE/vmlinux, CACHE/System.map, CACHE/config   the result
#   CACHE/key         sha256 of the fragment + linux-source version + this script
# A run whose key matches CACHE/key and finds CACHE/vmlinux does nothing.
# The path of vmlinux is the last (and only) line on stdout; all else goes to stderr.
set -euo pipefail

exec 3>&1 1>&2   # fd 3 = the real stdout, for the final path only

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

print_path=0 force=0
for arg in "$@"; do
    case $arg in
        --print-path) print_path=1 ;;
        --force) force=1 ;;
        -h | --help) usage >&3; exit 0 ;;
        *) echo "build-linux.sh: unknown argument: $arg" >&2; usage; exit 2 ;;
    esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self=$here/$(basename "${BASH_SOURCE[0]}")
fragment=$here/linux/fwcfg-e500.config
cache=${FWCFG_E500_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fwcfg-e500}
src=$cache/linux-6.1
build=$cache/build
out=$cache/vmlinux
tarball=/usr/src/linux-source-6.1.tar.xz
kmake_vars=(ARCH=powerpc CROSS_COMPILE=powerpc-linux-gnu-)
deps=(linux-source-6.1 flex bison bc libssl-dev libelf-dev cpio make
      gcc-powerpc-linux-gnu binutils-powerpc-linux-gnu)

if (( print_path )); then
    echo "$out" >&3
    exit 0
fi

log() { echo "build-linux.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -f $fragment ]] || die "missing config fragment $fragment"

source_version() { dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || true; }
cache_key() {
    { sha256sum <"$fragment"; echo "linux-source-6.1 $(source_version)"; sha256sum <"$self"; } |
        sha256sum | cut -d' ' -f1
}
up_to_date() {
    [[ -n $(source_version) && -s $out && -f $cache/key && $(<"$cache/key") == "$(cache_key)" ]]
}
done_at() { echo "$out" >&3; exit 0; }

# Fast path: nothing to do (no lock, no apt, no make).
if (( ! force )) && up_to_date; then done_at; fi

mkdir -p "$cache"
# One build at a time per cache (parallel test sessions may all ask for the kernel).
exec 9>"$cache/.lock"
flock 9
if (( ! force )) && up_to_date; then done_at; fi   # another run may have built it meanwhile

# --- Build dependencies ------------------------------------------------------------------
installed() { dpkg -s "$1" 2>/dev/null | grep -qx 'Status: install ok installed'; }
missing=()
for p in "${deps[@]}"; do installed "$p" || missing+=("$p"); done
if (( ${#missing[@]} )); then
    log "installing ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${deps[@]}" >&2
fi
version=$(source_version)
[[ -n $version && -f $tarball ]] || die "linux-source-6.1 is not installed ($tarball missing)"
if (( ! force )) && up_to_date; then done_at; fi   # the package was only missing
key=$(cache_key)

# --- Source: unpack once per package version ---------------------------------------------
stamp=$src/.fwcfg-e500-linux-source-version
if [[ ! -f $stamp || $(<"$stamp") != "$version" ]]; then
    log "unpacking $tarball ($version) into $src"
    rm -rf "$src" "$src.tmp" "$build"   # objects of another source version are stale
    mkdir -p "$src.tmp"
    tar -xJf "$tarball" -C "$src.tmp" --strip-components=1
    echo "$version" >"$src.tmp/.fwcfg-e500-linux-source-version"
    mv "$src.tmp" "$src"
fi

# --- Configure ---------------------------------------------------------------------------
kmake() { nice -n 10 make -C "$src" O="$build" "${kmake_vars[@]}" "$@"; }
mkdir -p "$build"
start=$SECONDS
log "configuring: mpc85xx_smp_defconfig + $fragment"
kmake -s mpc85xx_smp_defconfig >&2
# Merge onto the defconfig's minimal form, not onto the full .config: in a full .config
# every option that a dropped feature had selected (IPsec's ciphers, CAAM's hashes, ...)
# is an explicit value and would survive; from savedefconfig's output olddefconfig
# resolves them afresh.
kmake -s savedefconfig >&2
(cd "$build" && env "${kmake_vars[@]}" "$src/scripts/kconfig/merge_config.sh" \
    -m -O "$build" "$build/defconfig" "$fragment") >&2
kmake -s olddefconfig >&2

# Kconfig silently drops what it cannot set (a dependency is missing): every value the
# fragment sets must be in the final .config, every "is not set" must be unset.
lost=()
while IFS= read -r line; do
    if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
        grep -qxF -- "$line" "$build/.config" || lost+=("$line (now: $(grep -E \
            "^(# )?${BASH_REMATCH[1]}[= ]" "$build/.config" || echo "absent: dependencies unmet"))")
    elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        if now=$(grep -E "^${BASH_REMATCH[1]}=" "$build/.config"); then
            lost+=("$line (now: $now, selected by another option)")
        fi
    fi
done <"$fragment"
if (( ${#lost[@]} )); then
    log "the fragment did not survive make olddefconfig:"
    printf '  %s\n' "${lost[@]}" >&2
    die "fix scripts/linux/fwcfg-e500.config"
fi
log "all $(grep -cE '^(CONFIG_|# CONFIG_.* is not set$)' "$fragment") fragment lines hold"

# --- Build -------------------------------------------------------------------------------
jobs=$(nproc)
log "building vmlinux with -j$jobs (nice 10)"
kmake -j"$jobs" vmlinux >&2

cp "$build/vmlinux" "$out.tmp" && mv "$out.tmp" "$out"
cp "$build/System.map" "$cache/System.map.tmp" && mv "$cache/System.map.tmp" "$cache/System.map"
cp "$build/.config" "$cache/config"
echo "$key" >"$cache/key"
log "built in $((SECONDS - start)) s: $(stat -c %s "$out") bytes"
done_at
