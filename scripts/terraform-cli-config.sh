#!/usr/bin/env bash
# Writes the project's Terraform CLI config and prints its path.
# Uses the offline provider mirror these machines carry when it exists (no registry is
# reachable here), and the public registry otherwise. Point TF_CLI_CONFIG_FILE at the output.
set -euo pipefail
out="${1:-$(cd "$(dirname "$0")/.." && pwd)/.terraformrc.generated}"
mirror=""
for candidate in "${TF_PROVIDER_MIRROR:-}" /opt/tf-plugins /usr/share/terraform/plugins \
                 "$HOME/.terraform.d/plugins"; do
  if [ -n "$candidate" ] && [ -d "$candidate/registry.terraform.io/hashicorp/aws" ]; then
    mirror="$candidate"
    break
  fi
done
{
  echo 'disable_checkpoint = true'
  echo 'provider_installation {'
  if [ -n "$mirror" ]; then
    echo "  filesystem_mirror {"
    echo "    path    = \"$mirror\""
    echo "    include = [\"registry.terraform.io/hashicorp/aws\"]"
    echo "  }"
    echo "  direct {"
    echo "    exclude = [\"registry.terraform.io/hashicorp/aws\"]"
    echo "  }"
  else
    echo "  direct {}"
  fi
  echo '}'
} > "$out"
echo "$out"
