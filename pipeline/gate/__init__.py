"""The scan policy: Trivy reports → findings → a verdict, SARIF and Markdown."""
