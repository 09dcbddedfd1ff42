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

{{/*
The admin Service's name. A Service's name is a DNS label of at most 63
characters: the fullname is cut to leave room for "-admin", which keeps it
apart from the proxy's Service.
*/}}
{{- define "portcullis.adminServiceName" -}}
{{- printf "%s-admin" (include "portcullis.fullname" . | trunc 57 | trimSuffix "-") }}
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

{{/*
The protocol of an identity_providers entry, for NOTES.txt: its own, else
its preset's, as the preset fills it in (idp/preset_*.go): GitHub is OAuth2,
Cognito OAuth2 unless it names a user pool, every other preset OIDC.
*/}}
{{- define "portcullis.idpProtocol" -}}
{{- if .protocol }}
{{- upper (toString .protocol) }}
{{- else if eq (toString .preset) "github" }}
{{- "OAUTH2" }}
{{- else if eq (toString .preset) "cognito" }}
{{- if .user_pool_id }}OIDC{{ else }}OAUTH2{{ end }}
{{- else if .preset }}
{{- "OIDC" }}
{{- end }}
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

{{/*
Secrets never go into the ConfigMap, which more people and tools may read
than Secrets: a secret-bearing key of values.config must be empty or a
${VARIABLE} that the container's environment (the Secret) sets. Fails
naming every such key, never its value.
*/}}
{{- define "portcullis.refuseInlineSecrets" -}}
{{- $cfg := .Values.config | default dict }}
{{- $ref := "^\\$\\{[A-Za-z_][A-Za-z0-9_]*\\}$" }}
{{- $inline := list }}
{{- range $i, $key := (dig "session" "keys" list $cfg) }}
{{- if not (regexMatch $ref (toString $key)) }}
{{- $inline = append $inline (printf "config.session.keys[%d]" $i) }}
{{- end }}
{{- end }}
{{- $values := dict
  "config.session.redis.password" (dig "session" "redis" "password" "" $cfg)
  "config.session.redis.sentinel.password" (dig "session" "redis" "sentinel" "password" "" $cfg)
  "config.attribute_pass.jwt.signing_key" (dig "attribute_pass" "jwt" "signing_key" "" $cfg) }}
{{- range $path, $value := $values }}
{{- if and $value (not (regexMatch $ref (toString $value))) }}
{{- $inline = append $inline $path }}
{{- end }}
{{- end }}
{{- $redisURL := dig "session" "redis" "url" "" $cfg | toString }}
{{- if regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*:[^/@]+@" $redisURL }}
{{- $password := regexReplaceAll "^[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:([^/@]+)@.*$" $redisURL "${1}" }}
{{- if not (regexMatch $ref $password) }}
{{- $inline = append $inline "config.session.redis.url (its password)" }}
{{- end }}
{{- end }}
{{- range $i, $idp := (dig "sso" "identity_providers" list $cfg) }}
{{- range $key := list "client_secret" "bind_password" }}
{{- $value := toString (get ($idp | default dict) $key | default "") }}
{{- if and $value (not (regexMatch $ref $value)) }}
{{- $inline = append $inline (printf "config.sso.identity_providers[%d].%s" $i $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $inline }}
{{- fail (printf "%s: a secret written into values.config would be rendered into the ConfigMap; put it in the Secret (secret.sessionKeys, secret.clientSecrets, secret.env or secret.existingSecret) and drop the key, or write ${VARIABLE} for a variable that Secret sets" (join ", " $inline)) }}
{{- end }}
{{- end }}

{{/*
A LabelSelector (matchLabels, matchExpressions) as kubectl's -l takes it,
single-quoted when a shell would otherwise split or expand it.
*/}}
{{- define "portcullis.kubectlSelector" -}}
{{- $terms := list }}
{{- range $k, $v := .matchLabels }}
{{- $terms = append $terms (printf "%s=%s" $k (toString $v)) }}
{{- end }}
{{- range .matchExpressions }}
{{- if eq .operator "In" }}
{{- $terms = append $terms (printf "%s in (%s)" .key (join "," .values)) }}
{{- else if eq .operator "NotIn" }}
{{- $terms = append $terms (printf "%s notin (%s)" .key (join "," .values)) }}
{{- else if eq .operator "Exists" }}
{{- $terms = append $terms .key }}
{{- else if eq .operator "DoesNotExist" }}
{{- $terms = append $terms (printf "!%s" .key) }}
{{- end }}
{{- end }}
{{- $s := join "," $terms }}
{{- if regexMatch "[ !()]" $s }}'{{ $s }}'{{ else }}{{ $s }}{{ end }}
{{- end }}
