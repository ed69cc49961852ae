terraform {
  # 1.0 is the oldest release the API is tested against; OpenTofu reads the
  # same configuration.
  required_version = ">= 1.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}
