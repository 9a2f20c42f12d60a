#!/usr/bin/env bash
# Makes the fleet's PKI and the broker's ACL, and revokes or renews certificates:
#   Deploy/pki/make-pki.sh OUT_DIR FLEET [GATEWAY[:GROUP,GROUP...] ...]
#   Deploy/pki/make-pki.sh revoke OUT_DIR NAME     revoke NAME's certificate, update crl.pem,
#                                                  drop NAME's ACL lines (restart the broker)
#   Deploy/pki/make-pki.sh renew OUT_DIR NAME      a new key and certificate for NAME; the old
#                                                  certificate is revoked (restart the broker)
# Writes, in OUT_DIR:
#   ca.crt, ca.key                 the fleet CA (keep ca.key offline after this)
#   ca.db/                         the CA's database (index of issued and revoked certificates)
#   crl.pem                        the revocation list the broker loads (crlfile)
#   broker.crt, broker.key         the broker (SAN: localhost, 127.0.0.1 and $BROKER_HOSTS)
#   GATEWAY.crt, GATEWAY.key       one client certificate per gateway, CN = gateway id
#   spectra-aggregator.crt/.key    the aggregator's identity (and spectra-aggregator-2 ... with
#                                  AGGREGATORS=N: one identity per instance)
#   spectra-operator.crt/.key      the operator's identity (spectra-ctl)
#   acl                            mosquitto ACL: each gateway writes only gw/{its id}/...,
#                                  reads only its own cmd/ topics, its groups' and the fleet's config
# Environment: DAYS (validity, default 397), AGGREGATORS (instances, default 1), BROKER_HOSTS (extra DNS names, comma separated),
#   BROKER_SAN (replaces the broker's whole subjectAltName, e.g. DNS:broker.example),
#   EXPIRED (a name to issue an already-expired client certificate for; for tests).
# Re-running adds missing certificates and rewrites the ACL; it never replaces the CA.
set -euo pipefail

# The CA's database and configuration (made once; older PKI folders get one on the next run).
ca_setup() {
    mkdir -p ca.db
    [ -f ca.db/index.txt ] || : > ca.db/index.txt
    [ -f ca.db/serial ] || openssl rand -hex 16 > ca.db/serial
    [ -f ca.db/crlnumber ] || echo 1000 > ca.db/crlnumber
    cat > ca.db/ca.cnf <<CNF
[ ca ]
default_ca = fleet
[ fleet ]
dir = ca.db
database = ca.db/index.txt
serial = ca.db/serial
crlnumber = ca.db/crlnumber
new_certs_dir = ca.db
certificate = ca.crt
private_key = ca.key
default_md = sha256
default_crl_days = 30
policy = any
unique_subject = no
copy_extensions = none
[ any ]
commonName = supplied
CNF
}

gencrl() { openssl ca -batch -config ca.db/ca.cnf -gencrl -out crl.pem 2>/dev/null && chmod 644 crl.pem; }

if [ "${1:-}" = revoke ] || [ "${1:-}" = renew ]; then
    action="$1"
    [ $# -eq 3 ] || { echo "usage: $0 $action OUT_DIR NAME" >&2; exit 2; }
    out="$2" name="$3"
    [[ "$name" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || { echo "make-pki: name '$name' must be 1-64 of A-Z a-z 0-9 _ -" >&2; exit 2; }
    cd "$out"
    [ -f "$name.crt" ] || { echo "make-pki: $out has no certificate for '$name'" >&2; exit 2; }
    umask 077
    ca_setup
    openssl ca -batch -config ca.db/ca.cnf -revoke "$name.crt" 2>/dev/null || { echo "make-pki: revoking $name failed" >&2; exit 1; }
    gencrl
    mkdir -p revoked && mv "$name.crt" "revoked/$name.$(date +%s).crt" && rm -f "$name.key"
    if [ "$action" = revoke ]; then
        # Its ACL lines go too (its group memberships; the gateway patterns need a valid certificate).
        awk -v user="user $name" '$0 == user { skip = 1; next } /^user / { skip = 0 } !skip' acl > acl.new && mv acl.new acl && chmod 644 acl
        echo "make-pki: revoked $name; crl.pem updated: restart the broker (it reads crlfile at start)"
        exit 0
    fi
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > "$name.ext"
    openssl ca -batch -config ca.db/ca.cnf -in "$name.csr" -out "$name.crt" -days "${DAYS:-397}" -extfile "$name.ext" -notext 2>/dev/null
    rm -f "$name.csr" "$name.ext"
    chmod 600 "$name.key" && chmod 644 "$name.crt"
    echo "make-pki: renewed $name (valid ${DAYS:-397} days); the old certificate is revoked: restart the broker"
    exit 0
fi

if [ $# -lt 2 ]; then
    echo "usage: $0 OUT_DIR FLEET [GATEWAY[:GROUP,GROUP...] ...]" >&2
    exit 2
fi
out="$1" fleet="$2"; shift 2
id_re='^[A-Za-z0-9_-]{1,64}$'
[[ "$fleet" =~ $id_re ]] || { echo "make-pki: fleet '$fleet' must be 1-64 of A-Z a-z 0-9 _ -" >&2; exit 2; }
days="${DAYS:-397}"
aggregators="${AGGREGATORS:-1}"
[[ "$aggregators" =~ ^[1-9][0-9]?$ ]] || { echo "make-pki: AGGREGATORS must be 1-99" >&2; exit 2; }
mkdir -p "$out" && chmod 700 "$out" && cd "$out"
umask 077

if [ ! -f ca.key ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt \
        -days 3650 -subj "/CN=Spectra Fleet $fleet CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
ca_setup

issue() { # name subject extensions
    local name="$1" subject="$2" extensions="$3"
    [ -f "$name.crt" ] && return 0
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subject" 2>/dev/null
    printf '%b' "$extensions" > "$name.ext"
    openssl ca -batch -config ca.db/ca.cnf -in "$name.csr" -out "$name.crt" -days "$days" -extfile "$name.ext" -notext 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

san="DNS:localhost,IP:127.0.0.1"
IFS=',' read -ra extra <<< "${BROKER_HOSTS:-}"
for host in "${extra[@]}"; do [ -n "$host" ] && san="$san,DNS:$host"; done
san="${BROKER_SAN:-$san}"
issue broker "/CN=spectra-broker" "subjectAltName=$san\nextendedKeyUsage=serverAuth\n"
services=(spectra-aggregator spectra-operator)
issue spectra-aggregator "/CN=spectra-aggregator" "extendedKeyUsage=clientAuth\n"
for ((i = 2; i <= aggregators; i++)); do
    issue "spectra-aggregator-$i" "/CN=spectra-aggregator-$i" "extendedKeyUsage=clientAuth\n"
    services+=("spectra-aggregator-$i")
done
issue spectra-operator "/CN=spectra-operator" "extendedKeyUsage=clientAuth\n"
[ -f crl.pem ] || gencrl

{
    echo "# Generated by Deploy/pki/make-pki.sh for fleet $fleet. Identity = certificate CN (which the"
    echo "# broker also makes the client id: use_username_as_clientid)."
    echo "# Each aggregator instance reads what gateways publish and writes the retained stats. The"
    echo "# gateway patterns below apply to every identity: service identities are denied them."
    for service in "${services[@]}"; do
        [ "$service" = spectra-operator ] && continue
        echo "user $service"
        echo "topic deny spectra/v1/$fleet/gw/$service/#"
        for leaf in event telemetry status state; do echo "topic read spectra/v1/$fleet/gw/+/$leaf"; done
        echo "topic write spectra/v1/$fleet/stats/#"
        echo
    done
    echo "# The operator pushes signed config, firmware, stops and rebirths, and reads everything."
    echo "user spectra-operator"
    echo "topic deny spectra/v1/$fleet/gw/spectra-operator/#"
    echo "topic read spectra/v1/$fleet/#"
    echo "topic write spectra/v1/$fleet/gw/+/cmd/#"
    echo "topic write spectra/v1/$fleet/group/+/cmd/#"
    echo "topic write spectra/v1/$fleet/all/cmd/#"
    echo
    echo "# Every gateway (%u = its CN): its own topics only."
    for leaf in status event telemetry state; do echo "pattern write spectra/v1/$fleet/gw/%u/$leaf"; done
    echo "pattern read spectra/v1/$fleet/gw/%u/cmd/#"
    echo "pattern read spectra/v1/$fleet/all/cmd/config"
} > acl.head

: > acl.users
for spec in "$@"; do
    gateway="${spec%%:*}"
    groups=""
    [[ "$spec" == *:* ]] && groups="${spec#*:}"
    [[ "$gateway" =~ $id_re ]] || { echo "make-pki: gateway '$gateway' must be 1-64 of A-Z a-z 0-9 _ -" >&2; exit 2; }
    case "$gateway" in spectra-aggregator*|spectra-operator) echo "make-pki: '$gateway' is reserved" >&2; exit 2 ;; esac
    issue "$gateway" "/CN=$gateway" "extendedKeyUsage=clientAuth\n"
    if [ -n "$groups" ]; then
        echo "user $gateway" >> acl.users
        IFS=',' read -ra list <<< "$groups"
        for group in "${list[@]}"; do
            [[ "$group" =~ $id_re ]] || { echo "make-pki: group '$group' must be 1-64 of A-Z a-z 0-9 _ -" >&2; exit 2; }
            echo "topic read spectra/v1/$fleet/group/$group/cmd/config" >> acl.users
        done
    fi
done
{ cat acl.head; echo; echo "# Group memberships."; cat acl.users; } > acl
rm -f acl.head acl.users

if [ -n "${EXPIRED:-}" ] && [ ! -f "$EXPIRED.crt" ]; then
    # The CA's own database can backdate (openssl x509 could not).
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$EXPIRED.key" -out "$EXPIRED.csr" -subj "/CN=$EXPIRED" 2>/dev/null
    openssl ca -batch -config ca.db/ca.cnf -in "$EXPIRED.csr" -out "$EXPIRED.crt" \
        -startdate 20200101000000Z -enddate 20200102000000Z -notext 2>/dev/null
    rm -f "$EXPIRED.csr"
fi
chmod 600 ./*.key
chmod 644 ./*.crt acl crl.pem
echo "make-pki: $out holds the CA, broker, aggregator, operator and $# gateway certificate(s), and the ACL"
