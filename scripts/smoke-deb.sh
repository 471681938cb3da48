#!/usr/bin/env bash
# Smoke test of the Debian package on this machine (run as root, by
# .ci/run): builds it with scripts/build-deb.sh, installs it with dpkg -i
# (twice: a first installation, then the upgrade path), checks its files,
# users and permissions, verifies the systemd unit, starts the installed
# /usr/bin/keygate as the keygate user against a fresh data directory on
# 127.0.0.1, creates a key with the command line and uses it, stops the
# server with SIGTERM, then removes and purges the package. Whatever
# happens, the machine is left as it was: the trap purges the package.
#
# systemd need not be running (CI machines have no systemd as PID 1): the
# server is started directly, with the unit's user, umask and
# no-new-privileges, not through systemctl.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() { printf '== smoke-deb [%3ss] %s\n' "$((SECONDS - started))" "$*"; }
fail() {
    echo "smoke-deb: FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root (it installs and purges the package)"

# Never touch a real installation.
if dpkg-query -W -f='${Status}' keygate 2>/dev/null | grep -qv 'not-installed'; then
    fail "a keygate package is already installed here; not touching it"
fi
for path in /etc/keygate /var/lib/keygate /usr/bin/keygate /lib/systemd/system/keygate.service; do
    [ ! -e "$path" ] || fail "$path exists already; not touching it"
done
if getent passwd keygate >/dev/null || getent group keygate >/dev/null; then
    fail "a user or group keygate exists already; not touching it"
fi

# The few tools the build and the test need (present on most machines).
need=()
command -v dpkg-shlibdeps >/dev/null 2>&1 || need+=(dpkg-dev)
command -v readelf >/dev/null 2>&1 && command -v strip >/dev/null 2>&1 || need+=(binutils)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# What the package may change outside its own files, to compare after purge.
systemd_state() {
    find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
        /var/lib/systemd/deb-systemd-helper-masked -name '*keygate*' 2>/dev/null | LC_ALL=C sort || true
}
state_before=$(systemd_state)

# dpkg, waiting (up to 10 minutes) while another installation on this
# shared machine holds dpkg's lock; any other failure is final.
pkg() {
    local deadline=$((SECONDS + 600)) out said=
    until out=$(dpkg "$@" 2>&1); do
        if ! grep -q 'locked by another process' <<<"$out" || ((SECONDS >= deadline)); then
            printf '%s\n' "$out" >&2
            return 1
        fi
        [ -n "$said" ] || echo "smoke-deb: dpkg is busy with another installation; waiting"
        said=1
        sleep 1
    done
    printf '%s\n' "$out"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/keygate-smoke-deb.XXXXXX")
chmod 0755 "$work"
server_pid=
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        # keygate first: under strace it is strace's child, and would
        # outlive a killed strace (and keep the user from being deleted).
        local child
        for child in $(pgrep -P "$server_pid"); do
            kill -KILL "$child" 2>/dev/null || true
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if dpkg-query -W -f='${Status}' keygate 2>/dev/null | grep -qv 'not-installed'; then
        echo "smoke-deb: purging keygate after a failure" >&2
        pkg -P keygate >/dev/null || echo "smoke-deb: dpkg -P keygate failed" >&2
        if getent passwd keygate >/dev/null; then
            echo "smoke-deb: the user keygate is left (processes: $(pgrep -u keygate | tr '\n' ' '))" >&2
        fi
    fi
    if ((status != 0)) && [ -s "$work/server.err" ]; then
        echo "--- server log (last 40 lines) ---" >&2
        tail -n 40 "$work/server.err" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls a condition (a command) every 0.1 s until it holds or the deadline
# (in seconds) passes.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

step "building the package"
build_started=$SECONDS
deb=$(scripts/build-deb.sh | tail -n1)
[ -f "$deb" ] || fail "build-deb.sh printed no package ($deb)"
step "built $deb in $((SECONDS - build_started))s ($(du -h "$deb" | cut -f1))"
dpkg-deb --info "$deb" | sed -n 's/^ \(Depends\|Installed-Size\|Version\):/  \1:/p'

step "dpkg -i (first installation)"
pkg -i "$deb"
dpkg-query -W -f='${Status}\n' keygate | grep -qx 'install ok installed' || fail "keygate is not installed"

step "checking the installed files"
listing=$(dpkg -L keygate)
for path in /usr/bin/keygate /lib/systemd/system/keygate.service /etc/keygate/keygate.env \
    /usr/share/doc/keygate/copyright /usr/share/doc/keygate/README.md.gz \
    /usr/share/doc/keygate/operator-guide.md.gz; do
    grep -qx "$path" <<<"$listing" || fail "dpkg -L keygate does not list $path"
    [ -e "$path" ] || fail "$path is listed but missing"
done
dpkg-query -W -f='${Conffiles}\n' keygate | grep -q '^ /etc/keygate/keygate.env ' ||
    fail "/etc/keygate/keygate.env is not a conffile"
if grep -qv -e '^#' -e '^[[:space:]]*$' /etc/keygate/keygate.env; then
    fail "the env file sets something"
fi
/usr/bin/keygate --version

check_mode() { # path owner:group mode
    local got
    got=$(stat -c '%U:%G %a' "$1")
    [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}
check_users() {
    local entry uid shell
    entry=$(getent passwd keygate) || fail "no user keygate"
    uid=$(cut -d: -f3 <<<"$entry")
    shell=$(cut -d: -f7 <<<"$entry")
    ((uid < 1000)) || fail "keygate is not a system user (uid $uid)"
    case "$shell" in */nologin | */false) ;; *) fail "keygate has the login shell $shell" ;; esac
    [ "$(id -gn keygate)" = keygate ] || fail "keygate's group is $(id -gn keygate)"
    check_mode /etc/keygate/keygate.env root:keygate 640
    check_mode /var/lib/keygate keygate:keygate 700
    check_mode /usr/bin/keygate root:root 755
}
check_users

step "dpkg -i again (the upgrade path of the maintainer scripts)"
pkg -i "$deb"
check_users

step "verifying the systemd unit"
unit=/lib/systemd/system/keygate.service
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify checks the syntax, the referenced binary and the settings.
    verify=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $verify"
    [ -z "$verify" ] || fail "systemd-analyze verify complains: $verify"
    # The exposure score of the hardening (0 = locked down, 10 = none); a
    # regression above 2.0 fails.
    security=$(systemd-analyze security --offline=true --threshold=20 "$unit" 2>&1) ||
        fail "systemd-analyze security: exposure above 2.0: $(tail -n1 <<<"$security")"
    tail -n1 <<<"$security"
else
    echo "smoke-deb: systemd-analyze not installed; the unit file is not verified"
fi
for setting in 'User=keygate' 'StateDirectory=keygate' 'EnvironmentFile=/etc/keygate/keygate.env' \
    'Environment=KEYGATE_DATA_DIR=/var/lib/keygate' 'ProtectSystem=strict' 'NoNewPrivileges=true' \
    'CapabilityBoundingSet=' 'UMask=0077' 'Restart=on-failure' 'ExecStart=/usr/bin/keygate serve'; do
    grep -qx "$setting" "$unit" || fail "$unit lacks $setting"
done

step "starting /usr/bin/keygate as keygate on a fresh data directory"
data=$work/data
install -d -o keygate -g keygate -m 0700 "$data"
# As the unit runs it: user and group keygate, no capabilities, no new
# privileges, the package's env file, a clean environment. Port 0: the
# server picks a free port and logs it.
as_keygate=(setpriv --reuid=keygate --regid=keygate --init-groups --no-new-privs
    --inh-caps=-all --bounding-set=-all
    env -i PATH=/usr/bin:/bin KEYGATE_DATA_DIR="$data" KEYGATE_HOST=127.0.0.1
    KEYGATE_LOG=info /usr/bin/keygate --env-file /etc/keygate/keygate.env)
# Where strace is installed, the server runs under it, so that the system
# calls, socket families and memory protections it used can be checked
# against the unit's filters below (systemd itself cannot run here).
tracer=()
if command -v strace >/dev/null 2>&1; then
    tracer=(strace -f -qq -o "$work/trace")
fi
(cd "$data" && umask 0077 && exec "${tracer[@]}" "${as_keygate[@]}" serve --port 0) \
    >"$work/server.out" 2>"$work/server.err" &
server_pid=$!

listening_port() {
    port=$(sed -n 's/.*keygate is listening.*addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/server.err" | head -n1)
    [ -n "$port" ] || { kill -0 "$server_pid" 2>/dev/null || fail "the server exited during start-up"; false; }
}
wait_for 60 listening_port || fail "no 'keygate is listening' line within 60s"
base=http://127.0.0.1:$port
answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$base$1")" = 200 ]; }
wait_for 30 answers /health || fail "GET /health did not answer 200 within 30s"
wait_for 30 answers /ready || fail "GET /ready did not answer 200 within 30s: $(curl -s "$base/ready")"
step "listening on $base; /health and /ready answer 200"

grep -q 'keygate created the superuser "admin"' "$work/server.out" ||
    fail "the first start did not create the superuser"

step "creating a key with the command line and calling whoami with it"
key=$(cd "$data" && umask 0077 && "${as_keygate[@]}" api-key --name smoke-deb 2>"$work/api-key.err") ||
    fail "keygate api-key failed: $(cat "$work/api-key.err")"
[[ "$key" == sk-* ]] || fail "keygate api-key printed no key"
whoami=$(curl -fsS -H "x-api-key: $key" "$base/api/v1/users/whoami") || fail "whoami with the new key failed"
grep -q '"username":"admin"' <<<"$whoami" || fail "whoami answered $whoami"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'x-api-key: sk-not-a-key' "$base/api/v1/users/whoami")
[ "$code" = 401 ] || fail "whoami with an invalid key answered $code, not 401"

# What the server created is the keygate user's alone.
check_mode "$data" keygate:keygate 700
check_mode "$data/keygate.db" keygate:keygate 600
check_mode "$data/secret.key" keygate:keygate 600

step "signing in with the generated password"
password=$(sed -n '/shown only now:/{n;n;s/^ *//p;}' "$work/server.out")
[ -n "$password" ] || fail "no generated password on the server's standard output"
login=$(curl -fsS -X POST "$base/api/v1/login" -d username=admin --data-urlencode "password=$password") ||
    fail "signing in as admin failed"
grep -q '"access_token"' <<<"$login" || fail "the sign-in answered $login"
curl -fsS -o /dev/null "$base/" || fail "the settings UI did not answer"

step "stopping the server with SIGTERM"
# Under strace the server is strace's child; SIGTERM goes to keygate
# itself, and strace exits with keygate's status.
keygate_pid=$server_pid
if ((${#tracer[@]})); then
    keygate_pid=$(pgrep -P "$server_pid" | head -n1) || fail "no keygate process under strace"
fi
kill -TERM "$keygate_pid"
stopped() { ! kill -0 "$server_pid" 2>/dev/null; }
wait_for 30 stopped || fail "the server did not stop within 30s of SIGTERM"
status=0
wait "$server_pid" || status=$?
server_pid=
((status == 0)) || fail "the server exited with status $status after SIGTERM"
grep -q 'shutting down gracefully' "$work/server.err" || fail "no graceful shutdown in the log"

if ((${#tracer[@]})); then
    step "checking what the server did against the unit's sandbox"
    # Only what /usr/bin/keygate did, not setpriv and env before it.
    sed -n '/execve("\/usr\/bin\/keygate"/,$p' "$work/trace" >"$work/keygate.trace"
    [ -s "$work/keygate.trace" ] || fail "strace recorded no execve of /usr/bin/keygate"
    # The syscalls of systemd's filter groups, expanded.
    filter_syscalls() {
        local -A seen=()
        local queue=("$@") group line
        while ((${#queue[@]})); do
            group=${queue[0]}
            queue=("${queue[@]:1}")
            [ -z "${seen[$group]:-}" ] || continue
            seen[$group]=1
            while read -r line; do
                case $line in
                '' | '#'*) ;;
                @*) queue+=("$line") ;;
                *) echo "$line" ;;
                esac
            done < <(systemd-analyze syscall-filter "$group" </dev/null | tail -n +2)
        done | LC_ALL=C sort -u
    }
    # SystemCallFilter= lines: allowed groups, then ~denied ones; the
    # Protect*= settings that add denials of their own.
    allowed=() denied=()
    while read -r value; do
        if [[ $value == "~"* ]]; then
            read -ra groups <<<"${value#\~}"
            denied+=("${groups[@]}")
        else
            read -ra groups <<<"$value"
            allowed+=("${groups[@]}")
        fi
    done < <(sed -n 's/^SystemCallFilter=//p' "$unit")
    grep -qx 'ProtectClock=true' "$unit" && denied+=(@clock)
    LC_ALL=C comm -23 <(filter_syscalls "${allowed[@]}") <(filter_syscalls "${denied[@]}") >"$work/allowed"
    sed -n 's/^[0-9]* *\([a-z0-9_]*\)(.*/\1/p' "$work/keygate.trace" | LC_ALL=C sort -u >"$work/used"
    (($(wc -l <"$work/used") > 20)) || fail "strace recorded too few system calls to judge"
    blocked=$(LC_ALL=C comm -23 "$work/used" "$work/allowed" | tr '\n' ' ')
    [ -z "$blocked" ] || fail "SystemCallFilter= would refuse: $blocked"
    # RestrictAddressFamilies=
    read -ra families <<<"$(sed -n 's/^RestrictAddressFamilies=//p' "$unit")"
    while read -r family; do
        [[ " ${families[*]} " == *" $family "* ]] || fail "RestrictAddressFamilies= would refuse $family"
    done < <(sed -n 's/.* socket(\(AF_[A-Z0-9]*\),.*/\1/p' "$work/keygate.trace" | sort -u)
    # MemoryDenyWriteExecute=: no mapping both writable and executable, and
    # none made executable afterwards.
    if grep -E ' (mmap|mprotect|pkey_mprotect)\(.*PROT_WRITE\|PROT_EXEC' "$work/keygate.trace" ||
        grep -E ' (mprotect|pkey_mprotect)\(.*PROT_EXEC' "$work/keygate.trace"; then
        fail "MemoryDenyWriteExecute= would refuse the calls above"
    fi
    echo "  $(wc -l <"$work/used") distinct system calls, all allowed by the unit's filter"
fi

step "dpkg -r: the program goes, the settings and the user stay"
pkg -r keygate
[ ! -e /usr/bin/keygate ] || fail "/usr/bin/keygate is still there after dpkg -r"
[ -f /etc/keygate/keygate.env ] || fail "dpkg -r removed the env file (a conffile)"
getent passwd keygate >/dev/null || fail "dpkg -r removed the user"
[ -d /var/lib/keygate ] || fail "dpkg -r removed the state directory"

step "dpkg -P: everything goes"
pkg -P keygate
for path in /etc/keygate /var/lib/keygate /usr/bin/keygate "$unit" /usr/share/doc/keygate; do
    [ ! -e "$path" ] || fail "$path is still there after dpkg -P"
done
if getent passwd keygate >/dev/null || getent group keygate >/dev/null; then
    fail "the user or group keygate is still there after dpkg -P"
fi
state_after=$(systemd_state)
[ "$state_after" = "$state_before" ] || fail "systemd state differs after purge: $state_after"

step "passed in $((SECONDS - started))s"
