# The bastion and the database hosts share their hardening:
#   - IMDSv2 only (session tokens required, one network hop); on the database
#     hosts pgBackRest reads the instance profile's credentials from it,
#   - an encrypted gp3 root volume, deleted with the instance,
#   - the AMI is read once: a newer Ubuntu image published later must not
#     replace a database host (and its data) on the next apply. Roll out a new
#     image deliberately, one host at a time, with `-replace`.

# --- Bastion ----------------------------------------------------------------

resource "aws_instance" "bastion" {
  ami                    = local.ami_id
  instance_type          = var.bastion_instance_type
  key_name               = var.bastion_key_pair
  subnet_id              = aws_subnet.public.id
  vpc_security_group_ids = [aws_security_group.bastion.id]

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.bastion_root_volume_size
    encrypted             = true
    kms_key_id            = local.root_volume_kms_key_id
    delete_on_termination = true

    # Older 5.x providers do not copy default_tags onto the root volume.
    tags = merge(local.common_tags, {
      Name = "${local.name}-bastion-root"
      Role = "bastion"
    })
  }

  tags = {
    Name = "${local.name}-bastion"
    Role = "bastion"
  }

  lifecycle {
    ignore_changes = [ami]
  }
}

resource "aws_eip" "bastion" {
  domain   = "vpc"
  instance = aws_instance.bastion.id

  tags = {
    Name = "${local.name}-bastion"
  }

  depends_on = [aws_internet_gateway.this]
}

# --- PostgreSQL primary -------------------------------------------------------

resource "aws_instance" "primary" {
  ami                     = local.ami_id
  instance_type           = var.db_instance_type
  key_name                = var.db_key_pair
  subnet_id               = aws_subnet.private[local.primary_az].id
  vpc_security_group_ids  = [aws_security_group.db.id]
  disable_api_termination = var.db_termination_protection

  # Access to the pgBackRest bucket (backup.tf), and nothing else.
  iam_instance_profile = aws_iam_instance_profile.db.name

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size
    encrypted             = true
    kms_key_id            = local.root_volume_kms_key_id
    delete_on_termination = true

    tags = merge(local.common_tags, {
      Name = "${local.name}-primary-root"
      Role = "primary"
    })
  }

  tags = {
    Name = "${local.name}-primary"
    Role = "primary"
  }

  # The route out through the NAT gateway must exist before the host boots and
  # before Ansible installs packages on it.
  depends_on = [aws_route.private_nat, aws_route_table_association.private]

  lifecycle {
    ignore_changes = [ami]
  }
}

# --- PostgreSQL replicas ------------------------------------------------------

# count, not for_each: replicas are numbered and the outputs list them in that
# order; lowering replica_count removes the highest-numbered ones.
resource "aws_instance" "replica" {
  count = var.replica_count

  ami                     = local.ami_id
  instance_type           = var.db_instance_type
  key_name                = var.db_key_pair
  subnet_id               = aws_subnet.private[local.replica_azs[count.index]].id
  vpc_security_group_ids  = [aws_security_group.db.id]
  disable_api_termination = var.db_termination_protection

  # Access to the pgBackRest bucket (backup.tf), and nothing else.
  iam_instance_profile = aws_iam_instance_profile.db.name

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size
    encrypted             = true
    kms_key_id            = local.root_volume_kms_key_id
    delete_on_termination = true

    tags = merge(local.common_tags, {
      Name = "${local.name}-replica-${count.index + 1}-root"
      Role = "replica"
    })
  }

  tags = {
    Name = "${local.name}-replica-${count.index + 1}"
    Role = "replica"
  }

  depends_on = [aws_route.private_nat, aws_route_table_association.private]

  lifecycle {
    ignore_changes = [ami]
  }
}
