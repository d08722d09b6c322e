# The appliance in NIC mode: the translator reads transit packets straight
# off eth0 (IPv4 side) and eth1 (IPv6 side) with AF_PACKET sockets and sends
# the translated ones out itself; the kernel's forwarding is off, and the
# kernel keeps the appliance's own addresses (ARP, ND, BGP, metrics).
# Routers send the mapped IPv4 addresses to 203.0.113.1 and the /96 to
# 2001:db8:ffff::1 (static routes or the BGP announcements below).

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

  # ipv4_mtu and ipv6_mtu default to the NICs' MTUs in NIC mode.
  nic {
    ipv4   = "eth0"
    ipv6   = "eth1"
    queues = 0 # one AF_PACKET socket per CPU on each NIC, in one fanout group
  }
}

interface "eth0" {
  addresses = ["203.0.113.1/28"]
  mtu       = 1500
}

interface "eth1" {
  addresses = ["2001:db8:ffff::1/64"]
  mtu       = 1520
}

route {
  to  = "0.0.0.0/0"
  via = "203.0.113.14"
}

route {
  to  = "2001:db8:6::/64"
  via = "2001:db8:ffff::2"
}

metrics {
  listen = "[::1]:9646"
}
