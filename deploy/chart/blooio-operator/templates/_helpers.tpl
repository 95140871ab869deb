{{/*
Names, labels and references shared by the templates. The gen-*.yaml templates are
generated from deploy/ by hack/chart/generate.py; these helpers are hand-written.
*/}}

{{- define "blooio-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: the release name when it already contains the chart's
name (`helm install blooio-operator ...` gives the names of deploy/), else
<release>-<chart>. Cut to 45 characters so the longest suffix ("-leader-election") fits.
*/}}
{{- define "blooio-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The labels Helm adds to every object, next to the shipped ones. */}}
{{- define "blooio-operator.helmLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "blooio-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The Secret with the default API key: the chart's own (credentials.apiKey) or yours. */}}
{{- define "blooio-operator.credentialsSecret" -}}
{{- if .Values.credentials.apiKey }}
{{- printf "%s-credentials" (include "blooio-operator.fullname" .) }}
{{- else }}
{{- required "credentials.existingSecret (or credentials.apiKey) is required" .Values.credentials.existingSecret }}
{{- end }}
{{- end }}
