# bench/netns: map646 in host mode. The router namespace's kernel routes the
# public IPv4 prefix and the /96 into map646's own multi-queue tun.
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
  tun {
    name    = "{{.Tun}}"
    queues  = 0
    routes  = true
    mtu     = {{.IPv6MTU}}
    offload = true
  }
}
