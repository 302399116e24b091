{{/* Names, labels and the values every template derives from. */}}

{{- define "tmf-sqm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tmf-sqm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A resource name of the release: "<fullname>-<suffix>", within the 63 characters of a DNS label. */}}
{{- define "tmf-sqm.child" -}}
{{- $suffix := .suffix -}}
{{- $room := sub 62 (len $suffix) | int -}}
{{- printf "%s-%s" (include "tmf-sqm.fullname" .root | trunc $room | trimSuffix "-") $suffix -}}
{{- end -}}

{{- define "tmf-sqm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tmf-sqm.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object; "tmf-sqm/tier" (api, gateway, database) is what the NetworkPolicies select on. */}}
{{- define "tmf-sqm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: tmf-sqm
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "tmf-sqm.selectorLabels" . }}
{{- with .tier }}
tmf-sqm/tier: {{ . }}
{{- end }}
{{- end -}}

{{/* Pods of one tier of this release, as a NetworkPolicy peer. */}}
{{- define "tmf-sqm.tierPeer" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/instance: {{ .root.Release.Name }}
    app.kubernetes.io/name: {{ include "tmf-sqm.name" .root }}
    tmf-sqm/tier: {{ .tier }}
{{- end -}}

{{- define "tmf-sqm.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "tmf-sqm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tmf-sqm.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tmf-sqm.secretName" -}}
{{- default (include "tmf-sqm.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* The base path an API serves, e.g. /tmf-api/serviceInventory/v4. */}}
{{- define "tmf-sqm.basePath" -}}
{{- printf "/tmf-api/%s/v4" . -}}
{{- end -}}

{{- define "tmf-sqm.apiServiceName" -}}
{{- include "tmf-sqm.child" (dict "root" .root "suffix" (kebabcase .api)) -}}
{{- end -}}

{{- define "tmf-sqm.gatewayServiceName" -}}
{{- include "tmf-sqm.child" (dict "root" . "suffix" "gateway") -}}
{{- end -}}

{{- define "tmf-sqm.gatewayInternalUrl" -}}
{{- printf "http://%s:%v" (include "tmf-sqm.gatewayServiceName" .) .Values.service.port -}}
{{- end -}}

{{- define "tmf-sqm.apiInternalUrl" -}}
{{- printf "http://%s:%v" (include "tmf-sqm.apiServiceName" .) .root.Values.service.port -}}
{{- end -}}

{{/*
The URL one API reaches another at (its base path included): through the suite's gateway when
it runs, so that only the gateway reaches API pods; straight to the API's Service otherwise;
the API's externalUrl when it is not deployed here; empty when it is nowhere.
*/}}
{{- define "tmf-sqm.apiUrl" -}}
{{- $api := index .root.Values.apis .api -}}
{{- if not $api.enabled -}}
{{- $api.externalUrl | default "" | trimSuffix "/" -}}
{{- else if .root.Values.gateway.enabled -}}
{{- printf "%s%s" (include "tmf-sqm.gatewayInternalUrl" .root) (include "tmf-sqm.basePath" .api) -}}
{{- else -}}
{{- printf "%s%s" (include "tmf-sqm.apiInternalUrl" .) (include "tmf-sqm.basePath" .api) -}}
{{- end -}}
{{- end -}}

{{- define "tmf-sqm.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{- .Values.publicUrl | trimSuffix "/" -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- printf "%s://%s" (ternary "https" "http" (gt (len .Values.ingress.tls) 0)) (first .Values.ingress.hosts) -}}
{{- else if and .Values.httpRoute.enabled .Values.httpRoute.hostnames -}}
{{- printf "https://%s" (first .Values.httpRoute.hostnames) -}}
{{- else if .Values.gateway.enabled -}}
{{- include "tmf-sqm.gatewayInternalUrl" . -}}
{{- else -}}
{{- fail "publicUrl: set the URL partners reach the APIs at (or an ingress host or HTTPRoute hostname); with gateway.enabled false the chart cannot guess it" -}}
{{- end -}}
{{- end -}}

{{- define "tmf-sqm.mongodbDevName" -}}
{{- include "tmf-sqm.child" (dict "root" . "suffix" "mongodb") -}}
{{- end -}}

{{- define "tmf-sqm.mongodbDevMember" -}}
{{- $name := include "tmf-sqm.mongodbDevName" . -}}
{{- printf "%s-0.%s.%s.svc.%s:27017" $name $name .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/*
Values merged key by key, override winning, maps merged recursively. Sprig's mergeOverwrite
cannot be used: it never lets a false, 0 or "" of the override replace the base.
*/}}
{{- define "tmf-sqm.merge" -}}
{{- $merged := deepCopy .base -}}
{{- range $key, $value := .override -}}
{{- $current := get $merged $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $current) -}}
{{- $_ := set $merged $key (include "tmf-sqm.merge" (dict "base" $current "override" $value) | fromYaml) -}}
{{- else -}}
{{- $_ := set $merged $key $value -}}
{{- end -}}
{{- end -}}
{{- toYaml $merged -}}
{{- end -}}

{{/*
Every Deployment of the release, as a YAML list: its name, component label, tier, the arguments
of `sqm`, its client identity, and its values (defaults merged with its own block). Deployments,
Services, HPAs and PodDisruptionBudgets are all rendered from this one list.
*/}}
{{- define "tmf-sqm.workloads" -}}
{{- $root := . -}}
{{- $workloads := list -}}
{{- range $apiName, $api := .Values.apis -}}
{{- if $api.enabled -}}
{{- $own := omit $api "enabled" "externalUrl" "client" -}}
{{- $values := include "tmf-sqm.merge" (dict "base" $root.Values.defaults "override" $own) | fromYaml -}}
{{- $client := $api.client | default dict -}}
{{- $secretKey := ternary (printf "oauth-client-secret-%s" (kebabcase $apiName)) "oauth-client-secret" (not (empty $client.id)) -}}
{{- $workloads = append $workloads (dict
    "name" (include "tmf-sqm.apiServiceName" (dict "root" $root "api" $apiName))
    "component" (kebabcase $apiName)
    "tier" "api"
    "api" $apiName
    "args" (list "serve" "--api" $apiName "--host" "0.0.0.0" "--port" "8080")
    "clientId" (default $root.Values.oauth.client.id $client.id)
    "clientSecretKey" $secretKey
    "values" $values) -}}
{{- end -}}
{{- end -}}
{{- if .Values.gateway.enabled -}}
{{- $own := omit .Values.gateway "enabled" "corsOrigins" "rateLimit" "service" -}}
{{- $values := include "tmf-sqm.merge" (dict "base" .Values.defaults "override" $own) | fromYaml -}}
{{- $workloads = append $workloads (dict
    "name" (include "tmf-sqm.gatewayServiceName" $root)
    "component" "gateway"
    "tier" "gateway"
    "api" ""
    "args" (list "gateway" "--host" "0.0.0.0" "--port" "8080")
    "clientId" .Values.oauth.client.id
    "clientSecretKey" "oauth-client-secret"
    "values" $values) -}}
{{- end -}}
{{- toYaml $workloads -}}
{{- end -}}

{{/* The MongoDB URI when the chart writes the Secret. */}}
{{- define "tmf-sqm.mongodbUri" -}}
{{- if .Values.mongodb.uri -}}
{{- .Values.mongodb.uri -}}
{{- else if .Values.mongodb.dev.enabled -}}
{{- printf "mongodb://%s/?replicaSet=%s" (include "tmf-sqm.mongodbDevMember" .) .Values.mongodb.dev.replicaSetName -}}
{{- else -}}
{{- fail "mongodb.uri: set the URI of your MongoDB replica set, or existingSecret, or mongodb.dev.enabled for a development database" -}}
{{- end -}}
{{- end -}}
