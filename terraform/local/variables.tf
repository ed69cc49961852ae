variable "bastion_key_pair" {
  type        = string
  description = "Path to an OpenSSH public key file (e.g. id_ed25519.pub) authorized for root on the bastion."

  validation {
    condition     = can(regex("^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+", file(var.bastion_key_pair)))
    error_message = "The bastion_key_pair value must be the path of a readable OpenSSH public key file (not a private key)."
  }
}

variable "db_key_pair" {
  type        = string
  description = "Path to an OpenSSH public key file authorized for root on the database hosts (primary and replicas)."

  validation {
    condition     = can(regex("^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+", file(var.db_key_pair)))
    error_message = "The db_key_pair value must be the path of a readable OpenSSH public key file (not a private key)."
  }
}

variable "replica_count" {
  type        = number
  description = "Number of streaming read replicas next to the primary (0-8)."
  default     = 2

  validation {
    condition     = var.replica_count >= 0 && var.replica_count <= 8 && floor(var.replica_count) == var.replica_count
    error_message = "The replica_count value must be a whole number between 0 and 8."
  }
}

variable "environment" {
  type        = string
  description = "Short name of the lab (lowercase letter then up to 9 lowercase letters or digits). Namespaces are named pgc-<environment>-<host>; two labs side by side need different names."
  default     = "lab"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{0,9}$", var.environment))
    error_message = "The environment value must be 1-10 characters: a lowercase letter followed by lowercase letters or digits."
  }
}

variable "network_index" {
  type        = number
  description = "Index (0-99) of this lab's networks and link names: two labs side by side need different indexes. The public subnet is the (2*index)th /24 of lab_cidr, the private one the (2*index+1)th."
  default     = 0

  validation {
    condition     = var.network_index >= 0 && var.network_index <= 99 && floor(var.network_index) == var.network_index
    error_message = "The network_index value must be a whole number between 0 and 99."
  }
}

variable "lab_cidr" {
  type        = string
  description = "A /16 of private addresses the labs carve their /24 subnets from. Only addresses inside the lab's own namespaces are used."
  default     = "10.231.0.0/16"

  validation {
    condition     = can(cidrhost(var.lab_cidr, 0)) && can(regex("/16$", var.lab_cidr))
    error_message = "The lab_cidr value must be an IPv4 CIDR block with a /16 prefix, e.g. 10.231.0.0/16."
  }
}

variable "lab_root" {
  type        = string
  description = "Absolute directory under which each lab keeps its state (<lab_root>/<environment>: sshd configs, host keys, pid files, PostgreSQL data directories). Removed by destroy."
  default     = "/var/lib/pgcluster-lab"

  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$", var.lab_root)) && !can(regex("(^|/)\\.\\.?(/|$)", var.lab_root))
    error_message = "The lab_root value must be an absolute path without '.' or '..' components, spaces or special characters."
  }
}

variable "client_cidr" {
  type        = string
  description = "CIDR allowed to reach PostgreSQL as a client (pg_hba). Empty means the lab's private subnet."
  default     = ""

  validation {
    condition     = var.client_cidr == "" || can(cidrhost(var.client_cidr, 0))
    error_message = "The client_cidr value must be empty or an IPv4 CIDR block."
  }
}
