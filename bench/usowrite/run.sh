#!/bin/bash
# run.sh BIN GRO(on|off) ROUNDS TOTAL [RCVBUF]: sets up namespaces uwr-PID (router, the
# tun) and uws-PID (server) joined by a veth, runs single vs uso writes for
# n = 4, 8, 16 interleaved, ROUNDS times, and removes everything.
set -u
BIN=$1; GRO=$2; ROUNDS=$3; TOTAL=${4:-400000}; RCVBUF=${5:-67108864}
R=uwr-$$; S=uws-$$
cleanup() { [ -n "${SP:-}" ] && kill $SP 2>/dev/null; ip netns del $R 2>/dev/null; ip netns del $S 2>/dev/null; }
trap cleanup EXIT
ip netns add $R; ip netns add $S
ip -n $R link add r0 type veth peer name s0 netns $S
ip netns exec $R sysctl -qw net.ipv6.conf.all.forwarding=1
for ns in $R $S; do ip netns exec $ns sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0; done
ip -n $R tuntap add dev uw0 mode tun vnet_hdr multi_queue
ip -n $R link set uw0 up; ip -n $R link set r0 up; ip -n $S link set s0 up; ip -n $S link set lo up
ip -n $R addr add 2001:db8:1::1/64 dev r0 nodad
ip -n $S addr add 2001:db8:1::2/64 dev s0 nodad
ip -n $S route add 2001:db8:2::/64 via 2001:db8:1::1
ip netns exec $R ethtool -K r0 gro $GRO >/dev/null 2>&1
ip netns exec $S ethtool -K s0 gro $GRO >/dev/null 2>&1
ip netns exec $R ping -6 -c1 -W1 2001:db8:1::2 >/dev/null
for r in $(seq 1 $ROUNDS); do
  for n in 4 8 16; do
    for mode in single uso uso single; do
      ip netns exec $S nstat -n >/dev/null
      ip netns exec $S $BIN -role server -rcvbuf $RCVBUF > /tmp/uw-srv.$$ & SP=$!
      sleep 0.3
      w=$(ip netns exec $R $BIN -role writer -mode $mode -n $n -total $TOTAL)
      sleep 0.5; kill $SP; wait $SP; SP=
      drops=$(ip netns exec $S nstat -sz Udp6RcvbufErrors | awk '/Udp6RcvbufErrors/{print $2}')
      echo "gro=$GRO rcvbuf=$RCVBUF round=$r $w server: $(cat /tmp/uw-srv.$$ | tail -1) rcvbuf_drops=$drops"
    done
  done
done
rm -f /tmp/uw-srv.$$
