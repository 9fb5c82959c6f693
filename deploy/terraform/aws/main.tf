# N loadfleet agents in one AWS region, on spot instances of a cheap type.
# Call it once per region with that region's provider (see
# examples/two-regions). Agents dial their controller: the security group
# allows no inbound traffic at all.

locals {
  names = [for i in range(var.agent_count) : "${var.region_name}-${i + 1}"]
  tags = merge(var.tags, {
    "loadfleet:region" = var.region_name
    "loadfleet:role"   = "agent"
  })
}

data "aws_vpc" "default" {
  count   = var.vpc_id == null ? 1 : 0
  default = true
}

# Debian 12 from Debian's own account, for the chosen architecture.
data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"]
  filter {
    name   = "name"
    values = ["debian-12-${var.architecture == "arm64" ? "arm64" : "amd64"}-*"]
  }
  filter {
    name   = "architecture"
    values = [var.architecture]
  }
}

resource "aws_security_group" "agent" {
  name_prefix = "loadfleet-agent-${var.region_name}-"
  description = "loadfleet agents: no inbound; outbound to the controller and the targets"
  vpc_id      = var.vpc_id != null ? var.vpc_id : data.aws_vpc.default[0].id
  tags        = local.tags

  egress {
    description = "The controller and the load targets (the agent's allow-list limits targets)"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_instance" "agent" {
  # checkov:skip=CKV2_AWS_41:agents call no AWS API; without a role the instance holds no AWS credentials
  for_each = toset(local.names)

  ami                                  = data.aws_ami.debian.id
  instance_type                        = var.instance_type
  subnet_id                            = var.subnet_id
  vpc_security_group_ids               = [aws_security_group.agent.id]
  instance_initiated_shutdown_behavior = "terminate"
  monitoring                           = true
  ebs_optimized                        = true

  instance_market_options {
    market_type = "spot"
    spot_options {
      max_price                      = var.spot_max_price
      spot_instance_type             = "one-time"
      instance_interruption_behavior = "terminate"
    }
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    volume_size = 8
    volume_type = "gp3"
    encrypted   = true
  }

  user_data = templatefile("${path.module}/user-data.tftpl", {
    unit           = file("${path.module}/../../systemd/loadfleet-agent.service")
    name           = each.key
    region         = var.region_name
    controller_url = var.controller_url
    allow_target   = var.allow_target
    max_users      = var.max_users
    agent_url      = var.agent_url
    agent_sha256   = var.agent_sha256
    ttl_minutes    = var.ttl_minutes
    ca_pem         = var.ca_pem
    cert_pem       = var.agent_certs[each.key].cert_pem
    key_pem        = var.agent_certs[each.key].key_pem
  })
  user_data_replace_on_change = true

  tags = merge(local.tags, { Name = "loadfleet-agent-${each.key}" })
}
