# A small site: a handful of IPv6-only servers, each reachable from the IPv4
# Internet at one public IPv4 address. The translator runs as a daemon on an
# ordinary Linux host ("map646 run -c small-site.hcl"); the host's own
# interfaces and routes are managed as usual, so there are no interface or
# route blocks here.
#
# Validate with:  map646 check -c examples/small-site.hcl

translator {
  # RFC 6052: IPv4 clients appear to the servers as 2001:db8:64::<client>,
  # e.g. 192.0.2.2 as 2001:db8:64::c000:202. Route this /96 from the servers'
  # network to the translator. The well-known prefix 64:ff9b::/96 is only
  # allowed for global IPv4 addresses (RFC 6052 section 3.1).
  prefix = "2001:db8:64::/96"

  # RFC 7757 explicit address mappings: public IPv4 <-> server IPv6.
  mapping {
    ipv4 = "198.51.100.10" # www
    ipv6 = "2001:db8:6::10"
  }
  mapping {
    ipv4 = "198.51.100.11" # mail
    ipv6 = "2001:db8:6::11"
  }
  # A prefix maps onto a prefix with the same number of host bits: here
  # 198.51.100.16-31 become 2001:db8:6::1:10 to 2001:db8:6::1:1f.
  mapping {
    ipv4 = "198.51.100.16/28"
    ipv6 = "2001:db8:6::1:10/124"
  }

  # Clients behind links with a smaller MTU than 1280 do not exist on the
  # IPv6 side of this site, so the default stands:
  # lowest_ipv6_mtu = 1280

  # RFC 6791: source addresses for ICMPv4 errors that IPv6 routers send
  # from addresses that cannot be translated.
  icmp_source_pool = ["203.0.113.64/26"]

  # Never translate traffic to or from these IPv4 addresses.
  deny_ipv4 = ["198.51.100.255"]

  tun {
    name   = "map646"
    queues = 0    # one queue per CPU
    routes = true # route the mapped IPv4 addresses and the /96 into the tun
  }
}

metrics {
  listen = "[::1]:9646" # Prometheus text format at /metrics, and /healthz
}

log {
  level  = "info"
  format = "text"
}
