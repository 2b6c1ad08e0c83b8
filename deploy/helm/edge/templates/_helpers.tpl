{{- define "edge.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "edge.labels" -}}
app.kubernetes.io/name: {{ include "edge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "edge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
edge.toml: [server] and [cluster] from the values (so that listeners,
probes, Services and shutdown timing agree), then the operator's config.
JSON strings, numbers, booleans and arrays of them are TOML as they are.
*/}}
{{- define "edge.toml" -}}
[server]
listen_https = ":443"
listen_http = ":80"
listen_admin = {{ printf ":%d" (int .Values.server.adminPort) | quote }}
admin_token = "${EDGE_ADMIN_TOKEN}"
state_dir = "/var/lib/edge"
shutdown_delay = {{ printf "%ds" (int .Values.shutdown.delaySeconds) | quote }}
shutdown_grace = {{ printf "%ds" (int .Values.shutdown.graceSeconds) | quote }}
{{- with .Values.server.proxyProtocolFrom }}
proxy_protocol_from = {{ toJson . }}
{{- end }}
{{- range $k, $v := .Values.server.extra }}
{{ $k }} = {{ toJson $v }}
{{- end }}
{{- if .Values.cluster.redis }}

[cluster]
redis = "${EDGE_REDIS_URL}"
{{- end }}

{{ .Values.config }}
{{- end -}}
