variable "region_name" {
  description = "The loadfleet region these agents report under (for example eu-west)."
  type        = string
}

variable "agent_count" {
  description = "How many agents to run in this AWS region."
  type        = number
  default     = 2
  validation {
    condition     = var.agent_count >= 1 && var.agent_count <= 100
    error_message = "agent_count must be between 1 and 100."
  }
}

variable "instance_type" {
  description = "A cheap instance type; ARM (Graviton) by default."
  type        = string
  default     = "t4g.nano"
}

variable "architecture" {
  description = "arm64 or x86_64; must match instance_type and agent_url."
  type        = string
  default     = "arm64"
}

variable "spot_max_price" {
  description = "Highest spot price per hour in USD; null pays up to the on-demand price."
  type        = string
  default     = null
}

variable "controller_url" {
  description = "The controller agents dial, https://HOST:7700 (mTLS)."
  type        = string
}

variable "allow_target" {
  description = "What these agents may load: CIDR ranges, addresses or host names, comma-separated. Required: an agent told nothing refuses to start."
  type        = string
  validation {
    condition     = length(trimspace(var.allow_target)) > 0
    error_message = "allow_target must name what these agents may load (e.g. \"10.0.0.0/8,.staging.example.com\")."
  }
}

variable "max_users" {
  description = "Hard cap on users per agent, whatever a plan asks."
  type        = number
  default     = 2000
}

variable "agent_url" {
  description = "Where instances download loadfleet-agent (a build for var.architecture)."
  type        = string
}

variable "agent_sha256" {
  description = "SHA-256 of that binary; the download is refused otherwise."
  type        = string
}

variable "ca_pem" {
  description = "The fleet CA certificate (fleet/ca.pem)."
  type        = string
}

variable "agent_certs" {
  description = "Per agent name, its certificate and key from `loadfleet certs agent NAME`; names are REGION_NAME-1 .. -N."
  type = map(object({
    cert_pem = string
    key_pem  = string
  }))
  sensitive = true
}

variable "ttl_minutes" {
  description = "Instances power off (and terminate) this long after boot; 0 keeps them."
  type        = number
  default     = 240
}

variable "subnet_id" {
  description = "Subnet to launch in (with a route to the internet or the controller); null uses the default VPC's."
  type        = string
  default     = null
}

variable "vpc_id" {
  description = "VPC of subnet_id; null uses the default VPC."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
