#!/bin/sh
# Provisions one machine of the Vagrant lab: builds weave-rs, installs the
# CNI plugins and runs weave-router as a service peered with WEAVE_PEERS.
# Safe to run again (`vagrant provision`): every step is idempotent.
set -eu

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q build-essential pkg-config curl iproute2 iptables \
    nftables ipset containernetworking-plugins

modprobe openvswitch || echo "provision: no openvswitch module: weave-router will use Bridge mode"

if [ ! -x /root/.cargo/bin/cargo ]; then
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
cd /weave-rs
CARGO_TARGET_DIR=/var/cache/weave-rs-target /root/.cargo/bin/cargo build --release \
    --package weave-router --package weave-cni
install -m 0755 /var/cache/weave-rs-target/release/weave-router /usr/local/bin/
install -d /opt/cni/bin /etc/cni/net.d
/usr/local/bin/weave-router install-cni \
    --from /var/cache/weave-rs-target/release \
    --plugin-dir /opt/cni/bin --conf-dir /etc/cni/net.d
# Debian's reference plugins (portmap is chained after weave-net).
for plugin in portmap bandwidth tuning loopback; do
    ln -sf "/usr/lib/cni/$plugin" "/opt/cni/bin/$plugin"
done

cat > /etc/systemd/system/weave-router.service <<UNIT
[Unit]
Description=weave-rs router
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/weave-router --host ${WEAVE_HOST_IP} --db-prefix /var/lib/weave/weave --ipalloc-range 10.32.0.0/12 ${WEAVE_PEERS}
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
install -d /var/lib/weave
systemctl daemon-reload
systemctl enable weave-router.service
systemctl restart weave-router.service
echo "provision: weave-router started with peers ${WEAVE_PEERS}"
