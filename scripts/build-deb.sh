#!/usr/bin/env bash
# Builds target/debian/keygate_<version>_amd64.deb from a release build,
# with Debian's own dpkg-deb (no packaging tool to install; see
# docs/architecture.md, decision 78). The package holds:
#   /usr/bin/keygate                    the stripped release binary
#   /lib/systemd/system/keygate.service hardened unit, user keygate
#   /etc/keygate/keygate.env            conffile, commented defaults only
#   /usr/share/doc/keygate/             README, operator guide, copyright
# and the maintainer scripts in packaging/debian/. Depends is computed by
# dpkg-shlibdeps and checked against the libraries the binary links.
#
# Usage: scripts/build-deb.sh [--no-build]
#   --no-build  package the existing target/release/keygate as it is
# The same sources and binary give the same .deb, byte for byte: file
# times are the last commit's (SOURCE_DATE_EPOCH), owners are root.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
case "${1:-}" in
"") ;;
--no-build) build=0 ;;
*)
    echo "usage: $0 [--no-build]" >&2
    exit 2
    ;;
esac

for tool in dpkg-deb dpkg-shlibdeps readelf strip; do
    command -v "$tool" >/dev/null || {
        echo "build-deb: $tool not found (Debian: apt-get install dpkg-dev binutils)" >&2
        exit 1
    }
done

arch=$(dpkg --print-architecture)
# The package's version is the crate's: the first version line of Cargo.toml
# is [package]'s.
version=$(sed -n 's/^version = "\([^"]*\)"$/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || {
    echo "build-deb: no version in Cargo.toml" >&2
    exit 1
}

if ((build)); then
    cargo build --release --locked
fi
binary=target/release/keygate
[ -x "$binary" ] || {
    echo "build-deb: $binary missing (run without --no-build)" >&2
    exit 1
}
built_version=$("$binary" --version | awk '{print $2}')
[ "$built_version" = "$version" ] || {
    echo "build-deb: $binary is version $built_version, Cargo.toml says $version" >&2
    exit 1
}

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || stat -c %Y Cargo.toml)
fi
export SOURCE_DATE_EPOCH

out_dir=target/debian
stage=$out_dir/stage
deb=$out_dir/keygate_${version}_${arch}.deb
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"

# Files are created 0644/0755 whatever the caller's umask; the env file
# is tightened below.
umask 022
install -D -m 0755 "$binary" "$stage/usr/bin/keygate"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/keygate"
install -D -m 0644 packaging/debian/keygate.service "$stage/lib/systemd/system/keygate.service"

# The env file: a package header, then .env.example's sections (so every
# setting is listed, as in the operator guide), with the data directory the
# unit uses.
env_file=$stage/etc/keygate/keygate.env
mkdir -p "$stage/etc/keygate"
{
    cat packaging/debian/keygate.env.head
    echo
    awk '
        /^# --- / { body = 1 }
        !body { next }
        $0 == "# Directory of the default SQLite database (<dir>/keygate.db)." {
            print "# Directory of the SQLite database (<dir>/keygate.db) and of the generated"
            print "# secret.key. keygate.service sets it to its state directory, /var/lib/keygate;"
            print "# a directory elsewhere also needs ReadWritePaths= in a drop-in (systemctl"
            print "# edit keygate), since the rest of the file system is read-only to the service."
            next
        }
        $0 == "# KEYGATE_DATA_DIR=./data" { print "# KEYGATE_DATA_DIR=/var/lib/keygate"; found = 1; next }
        { print }
        END { if (!found) exit 1 }
    ' .env.example || {
        echo "build-deb: .env.example has no \"# KEYGATE_DATA_DIR=./data\" line to adapt" >&2
        exit 1
    }
} >"$env_file"
# No secret, and no setting at all, ships in the package.
if grep -nv -e '^#' -e '^[[:space:]]*$' "$env_file"; then
    echo "build-deb: $env_file must hold comments only" >&2
    exit 1
fi
chmod 0640 "$env_file"

doc=$stage/usr/share/doc/keygate
install -d -m 0755 "$doc"
install -m 0644 packaging/debian/copyright "$doc/copyright"
gzip -9n <README.md >"$doc/README.md.gz"
gzip -9n <docs/operator-guide.md >"$doc/operator-guide.md.gz"
chmod 0644 "$doc"/*.gz

install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$stage/DEBIAN/"
echo /etc/keygate/keygate.env >"$stage/DEBIAN/conffiles"
chmod 0644 "$stage/DEBIAN/conffiles"

# Depends: the shared libraries' packages, with the versions their symbols
# need, as dpkg-shlibdeps computes them for any Debian package (it wants a
# debian/control to read, so it runs in a scratch directory).
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/debian"
printf 'Source: keygate\n\nPackage: keygate\nArchitecture: any\n' >"$scratch/debian/control"
abs_binary=$(realpath "$stage/usr/bin/keygate")
shlibs=$(cd "$scratch" && dpkg-shlibdeps -O "$abs_binary" 2>"$scratch/shlibdeps.err") || {
    cat "$scratch/shlibdeps.err" >&2
    exit 1
}
shlibs=${shlibs#shlibs:Depends=}
# Cross-check: every library the binary links (readelf's NEEDED, resolved
# by ldd) belongs to a package named in Depends.
owner_of() {
    local candidate
    for candidate in "$1" "$(realpath "$1")" "/usr$1"; do
        dpkg -S "$candidate" 2>/dev/null | head -n1 | cut -d: -f1 | grep . && return 0
    done
    return 1
}
resolved=$(ldd "$abs_binary")
for lib in $(readelf -d "$abs_binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    # "libpq.so.5 => /lib/.../libpq.so.5 (0x…)", or the loader's own line,
    # "/lib64/ld-linux-x86-64.so.2 (0x…)".
    path=$(awk -v lib="$lib" '
        $1 == lib && $2 == "=>" { print $3; exit }
        substr($1, length($1) - length(lib)) == "/" lib { print $1; exit }
    ' <<<"$resolved")
    owner=$(owner_of "${path:-/nonexistent}") || {
        echo "build-deb: no installed package holds $lib (${path:-not found by ldd})" >&2
        exit 1
    }
    case ", $shlibs," in
    *", $owner "* | *", $owner,"*) ;;
    *)
        echo "build-deb: $lib ($owner) is linked but not in Depends: $shlibs" >&2
        exit 1
        ;;
    esac
done
for pkg in libpq5 libsqlite3-0 libssl3; do
    case ", $shlibs," in
    *", $pkg "* | *", $pkg,"*) ;;
    *)
        echo "build-deb: expected $pkg in Depends, got: $shlibs" >&2
        exit 1
        ;;
    esac
done

installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: keygate
Version: $version
Architecture: $arch
Maintainer: keygate maintainers <keygate@localhost>
Installed-Size: $installed_size
Depends: adduser, $shlibs
Section: net
Priority: optional
Description: self-hosted API-key gateway for LLM-application platforms
 keygate issues sk- API keys to users, stores only their SHA-256 and
 authenticates requests that carry a key, with the routes and key format
 of Langflow. It holds users, sessions, keys, encrypted provider
 credentials, variables and flows, proxies flow runs to the upstream with
 the owner's credential, and serves a settings UI.
 .
 This package runs it as the systemd service keygate.service, as the
 system user keygate, with its SQLite database in /var/lib/keygate and its
 settings in /etc/keygate/keygate.env.
EOF
chmod 0644 "$stage/DEBIAN/control"

(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"

# Same times everywhere, so the archive depends on the contents only.
find "$stage" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +

rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
rm -rf "$stage"
echo "$deb"
