# Regular zones of the region only: Local Zones and Wavelength Zones need an
# opt-in and do not offer every instance type.
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

# Newest Canonical Ubuntu LTS server image, looked up only when no ami_id is
# given. 24.04 images are published under hvm-ssd-gp3, 22.04 ones under
# hvm-ssd: the wildcard matches both.
data "aws_ami" "ubuntu" {
  count = var.ami_id == "" ? 1 : 0

  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd*/ubuntu-${local.ubuntu_codenames[var.ubuntu_release]}-${var.ubuntu_release}-${var.ami_architecture}-server-*"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }

  filter {
    name   = "root-device-type"
    values = ["ebs"]
  }

  filter {
    name   = "state"
    values = ["available"]
  }
}
