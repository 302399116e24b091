{{/*
Where external traffic goes, as a YAML list of {path, service}: everything to the suite's
gateway when it runs, otherwise each API's base path straight to that API's Service.
*/}}
{{- define "tmf-sqm.routes" -}}
{{- $routes := list -}}
{{- if .Values.gateway.enabled -}}
{{- $routes = append $routes (dict "path" "/" "service" (include "tmf-sqm.gatewayServiceName" .)) -}}
{{- else -}}
{{- range $apiName, $api := .Values.apis -}}
{{- if $api.enabled -}}
{{- $routes = append $routes (dict "path" (include "tmf-sqm.basePath" $apiName) "service" (include "tmf-sqm.apiServiceName" (dict "root" $ "api" $apiName))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $routes -}}
{{- end -}}
