{{/* The release's name prefix for every object, at most 63 characters
with room for the longest suffix (-nats-exporter). */}}
{{- define "tollgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 49 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 49 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "broker"). */}}
{{- define "tollgate.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tollgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "tollgate.proxyAddr" -}}
{{- .Values.broker.publicAddr | default (printf "%s-proxy.%s.svc:%v" (include "tollgate.fullname" .) .Release.Namespace .Values.broker.service.port) -}}
{{- end -}}

{{/* The Secret holding part .part's seed: the one named in values, else
the chart's own, which needs the seed. */}}
{{- define "tollgate.natsSecret" -}}
{{- $name := get .ctx.Values.nats.credentials.secretNames .part -}}
{{- if $name -}}
{{- $name -}}
{{- else -}}
{{- if not (get .ctx.Values.nats.credentials.seeds .part) -}}
{{- fail (printf "nats.credentials: set seeds.%s or secretNames.%s (the %s's nkey seed, DIR/%s.nk of `tollgate auth nats --dir=DIR`)" .part .part .part .part) -}}
{{- end -}}
{{- printf "%s-nats-%s" (include "tollgate.fullname" .ctx) .part -}}
{{- end -}}
{{- end -}}

{{/* The nats: block of every role's configuration. */}}
{{- define "tollgate.natsConfig" -}}
{{- if not .Values.nats.urls -}}
{{- fail "nats.urls: required (the client URLs of the NATS cluster, e.g. [tls://nats.nats.svc:4222])" -}}
{{- end -}}
nats:
  urls: {{ toJson .Values.nats.urls }}
  credentials_dir: /etc/tollgate/nats-auth
  replicas: {{ .Values.nats.replicas }}
  {{- if .Values.nats.caSecret }}
  tls:
    ca_file: /etc/tollgate/nats-ca/ca.crt
  {{- end }}
{{- end -}}

{{- define "tollgate.commonConfig" -}}
cluster_name: {{ .Values.clusterName | quote }}
data_dir: /var/lib/tollgate
{{ include "tollgate.natsConfig" . }}
audit:
  mode: {{ .Values.audit.mode | quote }}
log:
  level: {{ .Values.log.level | quote }}
  format: {{ .Values.log.format | quote }}
{{- end -}}

{{/* The pod's security context: the image's non-root user, the data
volume group-owned so it is writable. Only a volume whose root does not
match yet is changed: changing every file at each start would add group
bits to the CA keys, which the broker refuses (wider than 0600). */}}
{{- define "tollgate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tollgate.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "tollgate.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: health}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: health}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: health}
  periodSeconds: 5
  failureThreshold: 2
{{- end -}}

{{/* Volumes every role has: its configuration, its seeds (the role's and
the auditor's), the NATS CA, a writable /tmp. (dict "ctx" $ "role" "agent"
"config" "configMap"|"secret") */}}
{{- define "tollgate.volumes" -}}
- name: config
  {{- if eq .config "secret" }}
  secret:
    secretName: {{ include "tollgate.fullname" .ctx }}-{{ .role }}
  {{- else }}
  configMap:
    name: {{ include "tollgate.fullname" .ctx }}-{{ .role }}
  {{- end }}
- name: nats-auth
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ include "tollgate.natsSecret" (dict "ctx" .ctx "part" .role) }}
          items: [{key: {{ .role }}.nk, path: {{ .role }}.nk}]
      - secret:
          name: {{ include "tollgate.natsSecret" (dict "ctx" .ctx "part" "auditor") }}
          items: [{key: auditor.nk, path: auditor.nk}]
{{- if .ctx.Values.nats.caSecret }}
- name: nats-ca
  secret:
    secretName: {{ .ctx.Values.nats.caSecret }}
    items: [{key: ca.crt, path: ca.crt}]
{{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "tollgate.volumeMounts" -}}
- {name: config, mountPath: /etc/tollgate/config, readOnly: true}
- {name: nats-auth, mountPath: /etc/tollgate/nats-auth, readOnly: true}
{{- if .Values.nats.caSecret }}
- {name: nats-ca, mountPath: /etc/tollgate/nats-ca, readOnly: true}
{{- end }}
- {name: tmp, mountPath: /tmp}
- {name: data, mountPath: /var/lib/tollgate}
{{- end -}}
