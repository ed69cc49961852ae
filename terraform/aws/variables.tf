# Inputs of the AWS stack. The API reads this file to learn which variables
# /terraform/generate accepts, their types and their defaults: every variable
# has a type and a description, and the required ones have no default.

# --- Required ---------------------------------------------------------------

variable "bastion_key_pair" {
  type        = string
  description = "Name of an existing EC2 key pair in the region, installed for the ubuntu user on the bastion."

  validation {
    condition     = length(trimspace(var.bastion_key_pair)) > 0 && length(var.bastion_key_pair) <= 255
    error_message = "The bastion_key_pair must be the name of an existing EC2 key pair (1 to 255 characters)."
  }
}

variable "db_key_pair" {
  type        = string
  description = "Name of an existing EC2 key pair in the region, installed for the ubuntu user on the primary and the replicas."

  validation {
    condition     = length(trimspace(var.db_key_pair)) > 0 && length(var.db_key_pair) <= 255
    error_message = "The db_key_pair must be the name of an existing EC2 key pair (1 to 255 characters)."
  }
}

variable "ssh_allowed_cidrs" {
  type        = list(string)
  description = "IPv4 CIDR blocks allowed to reach the bastion on port 22, e.g. [\"203.0.113.10/32\"]. Empty (the default) opens SSH to nobody: set it to the operators' and the API server's networks before configuring the hosts; avoid 0.0.0.0/0."
  default     = []

  validation {
    condition = alltrue([
      for cidr in var.ssh_allowed_cidrs :
      can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", cidr)) && try(cidrhost(cidr, 0) == split("/", cidr)[0], false)
    ])
    error_message = "The ssh_allowed_cidrs must be IPv4 CIDR blocks written with their network address (203.0.113.0/24, not 203.0.113.7/24)."
  }
}

# --- Cluster shape ------------------------------------------------------------

variable "environment" {
  type        = string
  description = "Environment name (staging, prod, ...): part of every resource name and the Environment tag."
  default     = "staging"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.environment))
    error_message = "The environment must start with a lowercase letter and hold at most 20 lowercase letters, digits and hyphens."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name; names read <name_prefix>-<environment>-<role>."
  default     = "pgcluster"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name_prefix))
    error_message = "The name_prefix must start with a lowercase letter and hold at most 20 lowercase letters, digits and hyphens."
  }
}

variable "replica_count" {
  type        = number
  description = "Number of streaming read replicas (0 for a lone primary). Replicas are spread round-robin over the availability zones, starting with the zone after the primary's."
  default     = 2

  validation {
    condition     = var.replica_count >= 0 && var.replica_count <= 15 && var.replica_count % 1 == 0
    error_message = "The replica_count must be a whole number from 0 to 15."
  }
}

variable "db_instance_type" {
  type        = string
  description = "EC2 instance type of the primary and the replicas."
  default     = "t3.medium"

  validation {
    condition     = can(regex("^[a-z0-9-]+\\.[a-z0-9-]+$", var.db_instance_type))
    error_message = "The db_instance_type must look like an EC2 instance type, e.g. t3.medium or m7i.large."
  }
}

variable "bastion_instance_type" {
  type        = string
  description = "EC2 instance type of the bastion."
  default     = "t3.micro"

  validation {
    condition     = can(regex("^[a-z0-9-]+\\.[a-z0-9-]+$", var.bastion_instance_type))
    error_message = "The bastion_instance_type must look like an EC2 instance type, e.g. t3.micro."
  }
}

variable "root_volume_size" {
  type        = number
  description = "Size in GiB of the encrypted gp3 root volume of each database host (PostgreSQL data lives on it)."
  default     = 50

  validation {
    condition     = var.root_volume_size >= 8 && var.root_volume_size <= 16384 && var.root_volume_size % 1 == 0
    error_message = "The root_volume_size must be a whole number of GiB from 8 to 16384."
  }
}

variable "bastion_root_volume_size" {
  type        = number
  description = "Size in GiB of the encrypted gp3 root volume of the bastion."
  default     = 16

  validation {
    condition     = var.bastion_root_volume_size >= 8 && var.bastion_root_volume_size <= 16384 && var.bastion_root_volume_size % 1 == 0
    error_message = "The bastion_root_volume_size must be a whole number of GiB from 8 to 16384."
  }
}

variable "root_volume_kms_key_id" {
  type        = string
  description = "ARN of a KMS key for the root volumes. Empty: the account's default EBS key (aws/ebs). The volumes are encrypted either way."
  default     = ""

  validation {
    condition     = var.root_volume_kms_key_id == "" || can(regex("^arn:aws[a-z-]*:kms:", var.root_volume_kms_key_id))
    error_message = "The root_volume_kms_key_id must be empty or a KMS key ARN (arn:aws:kms:...)."
  }
}

variable "db_termination_protection" {
  type        = bool
  description = "Enable EC2 termination protection on the database hosts. While on, destroy (and any change that replaces a database host) fails until it is turned off again."
  default     = false
}

# --- Machine image ------------------------------------------------------------

variable "ami_id" {
  type        = string
  description = "AMI for every host. Empty: the newest Canonical Ubuntu LTS image of ubuntu_release and ami_architecture in the region."
  default     = ""

  validation {
    condition     = var.ami_id == "" || can(regex("^ami-([0-9a-f]{8}|[0-9a-f]{17})$", var.ami_id))
    error_message = "The ami_id must be empty or an AMI id (ami- followed by 8 or 17 hexadecimal digits)."
  }
}

variable "ubuntu_release" {
  type        = string
  description = "Ubuntu LTS release looked up when ami_id is empty: 22.04 or 24.04."
  default     = "24.04"

  validation {
    condition     = contains(["22.04", "24.04"], var.ubuntu_release)
    error_message = "The ubuntu_release must be 22.04 or 24.04."
  }
}

variable "ami_architecture" {
  type        = string
  description = "CPU architecture of the looked-up Ubuntu image: amd64 (t3, m7i, ...) or arm64 (t4g, m7g, ...). It must suit both instance types."
  default     = "amd64"

  validation {
    condition     = contains(["amd64", "arm64"], var.ami_architecture)
    error_message = "The ami_architecture must be amd64 or arm64."
  }
}

# --- Network ------------------------------------------------------------------

variable "region" {
  type        = string
  description = "AWS region to build the cluster in."
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", var.region))
    error_message = "The region must be an AWS region name such as us-east-1 or eu-central-1."
  }
}

variable "vpc_cidr" {
  type        = string
  description = "IPv4 CIDR block of the VPC, /16 to /24. It is cut into /(prefix+4) subnets: the first is public, the next ones private (one per availability zone). PostgreSQL accepts clients from this whole block."
  default     = "10.20.0.0/16"

  validation {
    condition = can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", var.vpc_cidr)) && try(
      cidrhost(var.vpc_cidr, 0) == split("/", var.vpc_cidr)[0] &&
      tonumber(split("/", var.vpc_cidr)[1]) >= 16 &&
      tonumber(split("/", var.vpc_cidr)[1]) <= 24,
      false
    )
    error_message = "The vpc_cidr must be an IPv4 CIDR block from /16 to /24 written with its network address, e.g. 10.20.0.0/16."
  }
}

variable "availability_zone_count" {
  type        = number
  description = "How many of the region's availability zones (in name order) get a private subnet, when availability_zones is empty. Fewer are used if the region has fewer."
  default     = 3

  validation {
    condition     = var.availability_zone_count >= 1 && var.availability_zone_count <= 6 && var.availability_zone_count % 1 == 0
    error_message = "The availability_zone_count must be a whole number from 1 to 6."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Availability zone names to use, in order (the first holds the public subnet, NAT gateway, bastion and primary). Empty: chosen from the region's available zones. Pinning them keeps the layout stable if a zone is added or becomes unavailable."
  default     = []

  validation {
    condition     = length(var.availability_zones) <= 6 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "The availability_zones must list at most 6 distinct zone names."
  }
}

# --- Backups ------------------------------------------------------------------

variable "backup_bucket_force_destroy" {
  type        = bool
  description = "Let destroy delete the pgBackRest bucket with every backup and object version in it. false (the default): destroy fails on the bucket while it holds any object, so the backups outlive the cluster until they are removed by hand or this is set to true."
  default     = false
}

variable "backup_noncurrent_version_days" {
  type        = number
  description = "Days an overwritten or deleted object of the backup bucket is kept as a noncurrent version before S3 removes it for good."
  default     = 30

  validation {
    condition     = var.backup_noncurrent_version_days >= 1 && var.backup_noncurrent_version_days <= 3650 && var.backup_noncurrent_version_days % 1 == 0
    error_message = "The backup_noncurrent_version_days must be a whole number of days from 1 to 3650."
  }
}

variable "backup_kms_key_arn" {
  type        = string
  description = "ARN of a KMS key to encrypt the backup bucket with (SSE-KMS); the database hosts' role is allowed to use this key only. Empty: SSE-S3 (AES256). The backups are encrypted either way."
  default     = ""

  validation {
    condition     = var.backup_kms_key_arn == "" || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.backup_kms_key_arn))
    error_message = "The backup_kms_key_arn must be empty or a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>); an alias is not accepted."
  }
}

# --- Tags ---------------------------------------------------------------------

variable "tags" {
  type        = map(string)
  description = "Extra tags for every resource (cost centre, owner, ...), added to the provider's default tags."
  default     = {}
}
