{{/* Names, labels and the image reference shared by every template. */}}

{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* RELEASE-CHART, or RELEASE when it already contains the chart name; 63 characters at most. */}}
{{- define "tollgate.fullname" -}}
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

{{/* FULLNAME-SUFFIX within 63 characters: call with (list . "suffix"). */}}
{{- define "tollgate.component" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "tollgate.fullname" $ctx | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tollgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of a component: call with (list . "operator"|"proxy"). */}}
{{- define "tollgate.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "tollgate.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* All labels of a component's objects. */}}
{{- define "tollgate.componentLabels" -}}
{{ include "tollgate.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "tollgate.operatorName" -}}
{{- include "tollgate.component" (list . "operator") }}
{{- end }}

{{- define "tollgate.proxyName" -}}
{{- include "tollgate.component" (list . "proxy") }}
{{- end }}

{{- define "tollgate.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "tollgate.operatorName" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tollgate.proxyServiceAccountName" -}}
{{- if .Values.proxy.serviceAccount.create }}
{{- default (include "tollgate.proxyName" .) .Values.proxy.serviceAccount.name }}
{{- else }}
{{- required "proxy.serviceAccount.name is required when proxy.serviceAccount.create is false" .Values.proxy.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is set. */}}
{{- define "tollgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The operator Service's DNS name: proxies connect to it, so the distribution certificate must
be valid for it. */}}
{{- define "tollgate.operatorHost" -}}
{{- printf "%s.%s.svc" (include "tollgate.operatorName" .) .Release.Namespace }}
{{- end }}

{{/* The operator's table endpoint as proxies reach it: https when operator.distributeTLS is set. */}}
{{- define "tollgate.operatorURL" -}}
{{- $scheme := ternary "https" "http" (ne .Values.operator.distributeTLS.secretName "") }}
{{- printf "%s://%s:%v" $scheme (include "tollgate.operatorHost" .) .Values.operator.distributePort }}
{{- end }}

{{/* Topology spread: the given constraints, or a soft spread of the component over nodes. */}}
{{- define "tollgate.topologySpread" -}}
{{- $ctx := index . 0 }}
{{- $component := index . 1 }}
{{- $given := index . 2 }}
{{- if $given }}
{{- toYaml $given }}
{{- else -}}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "tollgate.selectorLabels" (list $ctx $component) | nindent 6 }}
{{- end }}
{{- end }}

{{/*
The namespaces the operator watches, as a JSON list (empty: every namespace):
operator.watchNamespaces plus the older single operator.watchNamespace, without repeats.
*/}}
{{- define "tollgate.watchNamespaces" -}}
{{- $all := concat (.Values.operator.watchNamespaces | default list) (compact (list .Values.operator.watchNamespace)) }}
{{- toJson (uniq $all) }}
{{- end }}

{{/*
"true" when the operator copies its CA into injected namespaces: the injector is on, sidecars
get --operator-ca from sidecar.operatorCAConfigMap, the operator serves HTTPS
(operator.distributeTLS.secretName, whose ca.crt is copied) and sidecar.copyOperatorCA is on.
*/}}
{{- define "tollgate.copyOperatorCA" -}}
{{- if and .Values.sidecar.injector.enabled .Values.sidecar.operatorCAConfigMap .Values.operator.distributeTLS.secretName .Values.sidecar.copyOperatorCA -}}
true
{{- end -}}
{{- end }}
