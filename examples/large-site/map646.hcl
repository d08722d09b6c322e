# A large site: 100,000 one-to-one mappings kept in a CSV file rather than in
# mapping blocks. Loading 1M entries takes well under 3 seconds; a reload
# ("map646 reload" or SIGHUP) swaps the whole table atomically.
#
# The CSV is not checked in. Generate it next to this file with
#
#   examples/large-site/gen-mappings.sh 100000 > examples/large-site/mappings.csv
#   map646 check -c examples/large-site/map646.hcl
#
# The script draws the IPv4 side from 198.18.0.0/15 (RFC 2544 benchmarking
# space), standing in for your public addresses.

translator {
  prefix = "2001:db8:64::/96"

  # One "ipv4,ipv6" pair per line; an address or a prefix on each side; '#'
  # comments and blank lines are allowed. The path is relative to this file.
  # Errors are reported as mappings.csv:LINE:COLUMN.
  mappings_file = "mappings.csv"

  # mapping blocks and the file may be combined; no address may appear twice.
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }

  ipv4_mtu = 1500
  ipv6_mtu = 1520 # RFC 7755: at least the IPv4 MTU + 20, so nothing fragments

  # The translator's own IPv4 address: the source of the ICMPv4 errors it
  # sends and of Packet Too Big from IPv6 routers that have no IPv4
  # address (without it path MTU discovery depends on 192.0.0.8 getting
  # through). Use one that routes back to this host.
  ipv4_address = "203.0.113.1"

  tun {
    queues = 0
    # With routes = true the daemon installs the mapped IPv4 space
    # aggregated (adjacent addresses merge into prefixes), so 100,000
    # contiguous mappings become a handful of routes.
    routes = true
  }
}

metrics {
  listen = "[::1]:9646"
}

log {
  format = "json"
}
