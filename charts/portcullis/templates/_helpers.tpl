{{/* The chart's name, overridable. */}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource names: the release name, with the chart's unless it has it already. */}}
{{- define "portcullis.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the container's environment comes from. */}}
{{- define "portcullis.secretName" -}}
{{- default (include "portcullis.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/*
The configuration file: values.config with the two listeners the Service and
the probes rely on. admin_listen takes every address (":9773") so that the
kubelet and Prometheus reach it from outside the pod.
*/}}
{{- define "portcullis.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $server := dict }}
{{- if kindIs "map" (get $cfg "server") }}
{{- $server = get $cfg "server" }}
{{- end }}
{{- $_ := set $server "listen" (printf ":%d" (int .Values.ports.http)) }}
{{- $_ = set $server "admin_listen" (printf ":%d" (int .Values.ports.admin)) }}
{{- $_ = set $cfg "server" $server }}
{{- toYaml $cfg }}
{{- end }}

{{/* public_url and auth_prefix as users see them, for NOTES.txt. */}}
{{- define "portcullis.baseURL" -}}
{{- $server := .Values.config.server | default dict }}
{{- printf "%s%s" (trimSuffix "/" (toString $server.public_url)) (default "/.portcullis" $server.auth_prefix) }}
{{- end }}

{{/*
The session keys: the configured ones, else the ones the release's Secret
already holds (so an upgrade logs nobody out), else a fresh key.
*/}}
{{- define "portcullis.sessionKeys" -}}
{{- if .Values.secret.sessionKeys }}
{{- join "," .Values.secret.sessionKeys }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "portcullis.fullname" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "PORTCULLIS_SESSION_KEYS") }}
{{- index $existing.data "PORTCULLIS_SESSION_KEYS" | b64dec }}
{{- else }}
{{- randBytes 32 }}
{{- end }}
{{- end }}
{{- end }}
