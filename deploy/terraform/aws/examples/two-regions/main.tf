# Two agents in each of two AWS regions, dialing one controller over mTLS.
#
#   loadfleet certs init fleet --host controller.example
#   for n in eu-west-1 eu-west-2 us-east-1 us-east-2; do loadfleet certs agent $n --dir fleet; done
#   terraform init && terraform apply

provider "aws" {
  alias  = "eu"
  region = "eu-west-1"
}

provider "aws" {
  alias  = "us"
  region = "us-east-1"
}

locals {
  common = {
    controller_url = "https://controller.example:7700"
    allow_target   = ".example.com"
    agent_url      = "https://downloads.example.com/loadfleet-agent-aarch64"
    agent_sha256   = "0000000000000000000000000000000000000000000000000000000000000000"
    ca_pem         = file("${path.root}/fleet/ca.pem")
  }
  certs = {
    for n in ["eu-west-1", "eu-west-2", "us-east-1", "us-east-2"] : n => {
      cert_pem = file("${path.root}/fleet/agents/${n}.pem")
      key_pem  = file("${path.root}/fleet/agents/${n}.key")
    }
  }
}

module "eu_west" {
  source    = "../.."
  providers = { aws = aws.eu }

  region_name    = "eu-west"
  agent_count    = 2
  controller_url = local.common.controller_url
  allow_target   = local.common.allow_target
  agent_url      = local.common.agent_url
  agent_sha256   = local.common.agent_sha256
  ca_pem         = local.common.ca_pem
  agent_certs    = { for n, c in local.certs : n => c if startswith(n, "eu-west-") }
}

module "us_east" {
  source    = "../.."
  providers = { aws = aws.us }

  region_name    = "us-east"
  agent_count    = 2
  controller_url = local.common.controller_url
  allow_target   = local.common.allow_target
  agent_url      = local.common.agent_url
  agent_sha256   = local.common.agent_sha256
  ca_pem         = local.common.ca_pem
  agent_certs    = { for n, c in local.certs : n => c if startswith(n, "us-east-") }
}

output "agents" {
  value = concat(module.eu_west.agent_names, module.us_east.agent_names)
}
