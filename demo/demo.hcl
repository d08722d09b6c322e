# The demo's translator (map646 run --demo-config): one IPv6-only web
# server, 2001:db8:6::10, published at the IPv4 address 198.51.100.10.
# IPv4 clients appear to it as 2001:db8:64::<client IPv4>, so the demo's
# client 192.0.2.2 shows up in the server's log as 2001:db8:64::c000:202.
translator {
  prefix = "2001:db8:64::/96"

  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }

  icmp_source_pool = ["203.0.113.64/26"]

  tun {
    name   = "map646"
    queues = 1
    routes = true
    mtu    = 1520
  }
}

metrics {
  listen = "127.0.0.1:9646"
}
