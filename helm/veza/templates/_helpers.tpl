{{/*
Resource name of a service: the service name itself when it already carries the release name
("veza-backend-api" in release "veza"), otherwise "<release>-<service>". At most 63 characters.
Call with (dict "root" $ "name" $name).
*/}}
{{- define "veza.fullname" -}}
{{- if or (eq .root.Release.Name .name) (hasPrefix (printf "%s-" .root.Release.Name) .name) -}}
{{- .name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "veza.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "veza.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "veza.labels" -}}
{{ include "veza.selectorLabels" . }}
app.kubernetes.io/part-of: veza
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ include "veza.chart" .root }}
veza.io/environment: {{ .root.Values.global.environment }}
{{- end -}}

{{/*
The image reference: repository@digest. A tag alone is accepted only outside staging and prod
(and only when global.requireDigest is false): a tag can move, a digest cannot.
*/}}
{{- define "veza.image" -}}
{{- $img := .svc.image -}}
{{- $env := .root.Values.global.environment -}}
{{- $strict := or .root.Values.global.requireDigest (has $env (list "staging" "prod")) -}}
{{- if not $img.repository -}}
{{- fail (printf "services.%s.image.repository is empty: set it (the pipeline fills it from the Release manifest)" .name) -}}
{{- end -}}
{{- if regexMatch "@|:[^/]*$" $img.repository -}}
{{- fail (printf "services.%s.image.repository %q must not carry a tag or digest: put it in image.digest" .name $img.repository) -}}
{{- end -}}
{{- if $img.digest -}}
{{- if not (regexMatch "^sha256:[a-f0-9]{64}$" $img.digest) -}}
{{- fail (printf "services.%s.image.digest %q is not a sha256 digest (sha256:<64 hex>)" .name $img.digest) -}}
{{- end -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else if and $img.tag (not $strict) -}}
{{- printf "%s:%s" $img.repository $img.tag -}}
{{- else if $img.tag -}}
{{- fail (printf "services.%s.image: a tag alone (%q) is refused in environment %q: set image.digest (deploy with `invoke deploy --env %s`, which takes digests from the Release manifest)" .name $img.tag $env $env) -}}
{{- else -}}
{{- fail (printf "services.%s.image.digest is empty: deploy with `invoke deploy`, which sets it from the Release manifest" .name) -}}
{{- end -}}
{{- end -}}

{{- define "veza.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-veza" .Release.Name | trunc 63 | trimSuffix "-") .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The PodDisruptionBudget API: policy/v1 from Kubernetes 1.21, policy/v1beta1 before (removed in 1.25).
Both checks: a live cluster answers discovery; `helm template --kube-version` only sets the version.
*/}}
{{- define "veza.pdb.apiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1") (semverCompare ">=1.21.0-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{/* The Ingress API: networking.k8s.io/v1 from Kubernetes 1.19, v1beta1 before. */}}
{{- define "veza.ingress.apiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "networking.k8s.io/v1") (semverCompare ">=1.19.0-0" .Capabilities.KubeVersion.Version) -}}
networking.k8s.io/v1
{{- else -}}
networking.k8s.io/v1beta1
{{- end -}}
{{- end -}}
