{{/* Egress every process of the suite needs: DNS, MongoDB, public addresses, and extras. */}}
{{- define "tmf-sqm.commonEgress" -}}
{{- $np := .root.Values.networkPolicy -}}
- to:
    {{- toYaml $np.dns.to | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
# MongoDB
{{- if .root.Values.mongodb.dev.enabled }}
- to:
    - {{ include "tmf-sqm.tierPeer" (dict "root" .root "tier" "database") | indent 6 | trim }}
  ports:
    - port: 27017
      protocol: TCP
{{- else }}
- ports:
    {{- range $np.mongodb.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with $np.mongodb.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if $np.publicEgress.enabled }}
# Partners' callbacks and the OIDC provider
- to:
    {{- range $np.publicEgress.cidrs }}
    - ipBlock:
        {{- toYaml . | nindent 8 }}
    {{- end }}
  {{- with $np.publicEgress.ports }}
  ports:
    {{- range . }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- end }}
{{- end }}
{{- with $np.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}
