# Rules are separate aws_vpc_security_group_*_rule resources (one per source),
# never inline blocks, so each rule has its own id, description and tags.

# --- Bastion ----------------------------------------------------------------

resource "aws_security_group" "bastion" {
  name        = "${local.name}-bastion"
  description = "SSH bastion of ${local.name}"
  vpc_id      = aws_vpc.this.id

  tags = {
    Name = "${local.name}-bastion"
  }
}

resource "aws_vpc_security_group_ingress_rule" "bastion_ssh" {
  for_each = toset(var.ssh_allowed_cidrs)

  security_group_id = aws_security_group.bastion.id
  description       = "SSH from an allowed network"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value

  tags = {
    Name = "${local.name}-bastion-ssh"
  }
}

# Package downloads and SSH onwards to the database hosts.
resource "aws_vpc_security_group_egress_rule" "bastion_all" {
  security_group_id = aws_security_group.bastion.id
  description       = "All outbound traffic"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"

  tags = {
    Name = "${local.name}-bastion-egress"
  }
}

# --- Database hosts -----------------------------------------------------------

resource "aws_security_group" "db" {
  name        = "${local.name}-db"
  description = "PostgreSQL primary and replicas of ${local.name}"
  vpc_id      = aws_vpc.this.id

  tags = {
    Name = "${local.name}-db"
  }
}

resource "aws_vpc_security_group_ingress_rule" "db_ssh_from_bastion" {
  security_group_id            = aws_security_group.db.id
  description                  = "SSH from the bastion only"
  ip_protocol                  = "tcp"
  from_port                    = 22
  to_port                      = 22
  referenced_security_group_id = aws_security_group.bastion.id

  tags = {
    Name = "${local.name}-db-ssh"
  }
}

# Clients and streaming replication (replicas connect to the primary on 5432).
resource "aws_vpc_security_group_ingress_rule" "db_postgresql" {
  security_group_id = aws_security_group.db.id
  description       = "PostgreSQL from inside the VPC"
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
  cidr_ipv4         = aws_vpc.this.cidr_block

  tags = {
    Name = "${local.name}-db-postgresql"
  }
}

# Package downloads through the NAT gateway and replication to the primary.
resource "aws_vpc_security_group_egress_rule" "db_all" {
  security_group_id = aws_security_group.db.id
  description       = "All outbound traffic"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"

  tags = {
    Name = "${local.name}-db-egress"
  }
}

# --- High availability: etcd (2379 clients, 2380 peers) and Patroni's REST API
# (8008), between the cluster's own hosts only: the database hosts and the
# bastion (an etcd member, and the server's way to the REST API).

locals {
  ha_rules = {
    db_etcd_from_db         = { sg = "db", from = "db", port = 2379, to_port = 2380, what = "etcd from the database hosts" }
    db_etcd_from_bastion    = { sg = "db", from = "bastion", port = 2379, to_port = 2380, what = "etcd from the bastion" }
    db_patroni_from_db      = { sg = "db", from = "db", port = 8008, to_port = 8008, what = "Patroni REST API from the database hosts" }
    db_patroni_from_bastion = { sg = "db", from = "bastion", port = 8008, to_port = 8008, what = "Patroni REST API from the bastion" }
    bastion_etcd_from_db    = { sg = "bastion", from = "db", port = 2379, to_port = 2380, what = "etcd from the database hosts" }
  }
  ha_groups = {
    db      = aws_security_group.db.id
    bastion = aws_security_group.bastion.id
  }
}

resource "aws_vpc_security_group_ingress_rule" "ha" {
  for_each                     = local.ha_rules
  security_group_id            = local.ha_groups[each.value.sg]
  description                  = each.value.what
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.to_port
  referenced_security_group_id = local.ha_groups[each.value.from]

  tags = {
    Name = "${local.name}-${replace(each.key, "_", "-")}"
  }
}
