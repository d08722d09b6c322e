# The appliance: map646 as the VM image's init (PID 1), which configures the
# VM's own network interfaces and routes from this file, then translates.
# Several such VMs can run side by side: each announces the same prefixes
# by BGP, the routers spread traffic over them (ECMP), and since no
# connection state is kept, losing one only withdraws its routes.
#
# Build a bootable image with it:
#   map646 image build -c examples/appliance.hcl -o out/
#
#            IPv4 Internet                                 IPv6-only servers
#   router 203.0.113.14 --- eth0 [map646 VM] eth1 --- 2001:db8:ffff::2 --- 2001:db8:6::/64
#                      203.0.113.1/28    2001:db8:ffff::1/64

translator {
  prefix = "2001:db8:64::/96"

  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
  mapping {
    ipv4 = "198.51.100.11"
    ipv6 = "2001:db8:6::11"
  }

  icmp_source_pool = ["203.0.113.64/26"]

  # The links: IPv4 frames of 1500 bytes grow by 20 when translated; with an
  # IPv6 MTU of 1520 they never need fragmenting (RFC 7755).
  ipv4_mtu = 1500
  ipv6_mtu = 1520

  tun {
    name    = "map646"
    routes  = true
    mtu     = 1520
    offload = true # checksum and segmentation offloads on the tun
  }
}

# The VM's NICs, in the order the hypervisor presents them. Addresses are
# added without duplicate address detection, so the VM is ready at once.
interface "eth0" {
  addresses = ["203.0.113.1/28"]
  mtu       = 1500
}
interface "eth1" {
  addresses = ["2001:db8:ffff::1/64"]
  mtu       = 1520
}

# Static routes: the IPv4 default, and the servers behind the IPv6 router.
route {
  to  = "0.0.0.0/0"
  via = "203.0.113.14"
}
route {
  to  = "2001:db8:6::/64"
  via = "2001:db8:ffff::2"
}

# Announce the mapped IPv4 addresses to the IPv4 router and the /96 to the
# IPv6 router. The routes are withdrawn when the data path is unhealthy.
bgp {
  local_as    = 64512
  router_id   = "203.0.113.1"
  listen_port = 0 # only connect out
  hold_time   = 9 # fail over within 9 seconds
  keepalive   = 3

  neighbor "203.0.113.14" {
    remote_as = 64500
    password  = "example-md5-key" # TCP MD5 (RFC 2385)
  }
  neighbor "2001:db8:ffff::2" {
    remote_as = 64501
  }
}

# Servers on the eth1 link learn the route to the /96 from router
# advertisements (RFC 4191 Route Information Option) without making this VM
# their default router.
router_advertisement "eth1" {
  preference      = "high"
  router_lifetime = 0
  interval        = 10
  route_lifetime  = 30 # the route disappears 30 s after the VM does
}

metrics {
  listen = "[2001:db8:ffff::1]:9646"
}

log {
  level  = "info"
  format = "json" # one JSON object per line on the serial console
}
