# map646 configuration, installed by the Debian package as a conffile
# (your edits survive upgrades). The addresses below are documentation
# examples (RFC 5737, RFC 3849): replace them with yours, then
#   map646 check /etc/map646/map646.hcl
#   systemctl enable --now map646
# Reference: docs/configuration.md, or 'man map646-run'.

translator {
  # RFC 6052 prefix: IPv4 clients appear to the servers inside it
  # (192.0.2.2 as 2001:db8:64::c000:202). Route it to this host.
  prefix = "2001:db8:64::/96"

  # RFC 7757 explicit address mappings: public IPv4 <-> server IPv6.
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }

  # The translator's own public IPv4 address: the source of the ICMPv4
  # errors it sends and of those it translates from IPv6 routers that have
  # no IPv4 address (Packet Too Big among them). Without it they come from
  # 192.0.0.8, which filters drop, and path MTU discovery breaks for IPv4
  # clients (RFC 7915 section 5.2). Route it to this host; or give
  # icmp_source_pool = ["..."] instead (RFC 6791).
  ipv4_address = "203.0.113.1"

  # For many servers, one "ipv4,ipv6" line each, relative to this file:
  # mappings_file = "mappings.csv"

  # The MTUs of the two sides; set them to clamp TCP MSS and answer
  # oversized packets with ICMP (RFC 7915).
  # ipv4_mtu = 1500
  # ipv6_mtu = 1520
}

# Prometheus /metrics and /healthz.
metrics {
  listen = "[::1]:9646"
}

log {
  level  = "info"
  format = "text"
}
