# bench/netns: map646 in NIC mode. map646 reads and writes the router
# namespace's veths through AF_PACKET; the harness turns the namespace's
# kernel forwarding off, so only map646 moves transit packets.
# The link block is docs/configuration.md's "Link modes"; a binary that
# rejects it is reported as unsupported.
translator {
  prefix = "{{.Prefix}}"
{{- if .MappingsFile}}
  mappings_file = "{{.MappingsFile}}"
{{- else}}
  mapping {
    ipv4 = "{{.Public4}}"
    ipv6 = "{{.Server6}}"
  }
{{- end}}
  ipv4_mtu = {{.IPv4MTU}}
  ipv6_mtu = {{.IPv6MTU}}
  nic {
    ipv4 = "{{.IPv4If}}"
    ipv6 = "{{.IPv6If}}"
  }
}
