# The appliance of `make demo` (image/demo.sh): eth0 faces IPv4-only
# clients, eth1 faces the IPv6-only data centre. Documentation addresses only.
translator {
  prefix = "2001:db8:64::/96"        # IPv4 clients appear as 2001:db8:64::<client v4>

  mapping {                          # the public IPv4 address of the web server
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }

  icmp_source_pool = ["203.0.113.64/26"]
}

interface "eth0" {
  addresses = ["203.0.113.1/28"]
  mtu       = 1500
}

interface "eth1" {
  addresses = ["2001:db8:ffff::1/64"]
  mtu       = 1520                   # IPv4 MTU + 20 (RFC 7755)
}

route {
  to  = "2001:db8:6::/64"
  via = "2001:db8:ffff::2"
}
