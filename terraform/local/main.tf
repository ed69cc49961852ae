# A lab that has the shape of the AWS stack on one Linux machine: network
# namespaces play the hosts, each running its own sshd.
#
#   root namespace --(public veth)--> bastion --(private bridge)--> primary, replicas
#
# The private subnet is "unreachable" from the root namespace, so the database
# hosts are reached only through the bastion, as in the VPC. All the work is
# done by lab.sh; the resources below only call it and keep in their triggers
# everything the destroy-time provisioners need.

locals {
  lab_dir = "${var.lab_root}/${var.environment}"
  prefix  = "pgc${var.network_index}"

  public_cidr  = cidrsubnet(var.lab_cidr, 8, 2 * var.network_index)
  private_cidr = cidrsubnet(var.lab_cidr, 8, 2 * var.network_index + 1)
  client_cidr  = var.client_cidr == "" ? local.private_cidr : var.client_cidr

  gateway_address = cidrhost(local.public_cidr, 1)
  bastion_address = cidrhost(local.public_cidr, 2)
  bastion_private = cidrhost(local.private_cidr, 2)
  primary_address = cidrhost(local.private_cidr, 10)
  replica_addresses = [
    for i in range(var.replica_count) : cidrhost(local.private_cidr, 11 + i)
  ]

  # Database hosts by inventory name; a replica keeps its name, address and
  # links whatever the replica_count, so scaling adds or removes only the tail.
  db_hosts = merge(
    { primary = { address = local.primary_address, link = "${local.prefix}pri" } },
    { for i in range(var.replica_count) : "replica${i + 1}" => {
      address = cidrhost(local.private_cidr, 11 + i)
      link    = "${local.prefix}r${i + 1}"
    } }
  )

  script = "${path.module}/lab.sh"
}

resource "null_resource" "lab" {
  triggers = {
    script          = local.script
    environment     = var.environment
    lab_dir         = local.lab_dir
    owner           = abspath(path.root)
    bridge          = "${local.prefix}br"
    public_link     = "${local.prefix}pub"
    bastion_link    = "${local.prefix}bas"
    public_cidr     = local.public_cidr
    private_cidr    = local.private_cidr
    gateway_address = local.gateway_address
    bastion_address = local.bastion_address
    bastion_private = local.bastion_private
    namespace       = "pgc-${var.environment}-bastion"
  }

  provisioner "local-exec" {
    command = "bash '${self.triggers.script}' lab-up"
    environment = {
      LAB_ENV          = self.triggers.environment
      LAB_DIR          = self.triggers.lab_dir
      LAB_OWNER        = self.triggers.owner
      LAB_BRIDGE       = self.triggers.bridge
      LAB_PUBLIC_LINK  = self.triggers.public_link
      LAB_BASTION_LINK = self.triggers.bastion_link
      LAB_PUBLIC_CIDR  = self.triggers.public_cidr
      LAB_PRIVATE_CIDR = self.triggers.private_cidr
      LAB_GATEWAY      = self.triggers.gateway_address
      LAB_BASTION_IP   = self.triggers.bastion_address
      LAB_BASTION_PRIV = self.triggers.bastion_private
      LAB_NAMESPACE    = self.triggers.namespace
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "bash '${self.triggers.script}' lab-down"
    environment = {
      LAB_ENV          = self.triggers.environment
      LAB_DIR          = self.triggers.lab_dir
      LAB_OWNER        = self.triggers.owner
      LAB_BRIDGE       = self.triggers.bridge
      LAB_PUBLIC_LINK  = self.triggers.public_link
      LAB_BASTION_LINK = self.triggers.bastion_link
      LAB_PRIVATE_CIDR = self.triggers.private_cidr
      LAB_NAMESPACE    = self.triggers.namespace
    }
  }
}

# Authorized keys live in files of their own, so a new key only rewrites them:
# it does not rebuild any host.
resource "null_resource" "authorized_keys" {
  for_each = {
    bastion = var.bastion_key_pair
    db      = var.db_key_pair
  }

  triggers = {
    script  = local.script
    lab_dir = null_resource.lab.triggers.lab_dir
    file    = "${null_resource.lab.triggers.lab_dir}/${each.key}_authorized_keys"
    key     = trimspace(file(each.value))
  }

  provisioner "local-exec" {
    command = "bash '${self.triggers.script}' keys"
    environment = {
      LAB_DIR       = self.triggers.lab_dir
      LAB_KEYS_FILE = self.triggers.file
      LAB_KEY       = self.triggers.key
    }
  }
}

resource "null_resource" "bastion_sshd" {
  triggers = {
    script     = local.script
    lab_dir    = null_resource.lab.triggers.lab_dir
    host       = "bastion"
    namespace  = null_resource.lab.triggers.namespace
    address    = local.bastion_address
    keys_file  = null_resource.authorized_keys["bastion"].triggers.file
    forwarding = "yes"
  }

  provisioner "local-exec" {
    command = "bash '${self.triggers.script}' sshd-up"
    environment = {
      LAB_DIR        = self.triggers.lab_dir
      LAB_HOST       = self.triggers.host
      LAB_NAMESPACE  = self.triggers.namespace
      LAB_ADDRESS    = self.triggers.address
      LAB_KEYS_FILE  = self.triggers.keys_file
      LAB_FORWARDING = self.triggers.forwarding
    }
  }
}

resource "null_resource" "db_host" {
  for_each = local.db_hosts

  triggers = {
    script       = local.script
    environment  = null_resource.lab.triggers.environment
    lab_dir      = null_resource.lab.triggers.lab_dir
    bridge       = null_resource.lab.triggers.bridge
    private_cidr = null_resource.lab.triggers.private_cidr
    owner        = null_resource.lab.triggers.owner
    host         = each.key
    namespace    = "pgc-${var.environment}-${each.key}"
    link         = each.value.link
    address      = each.value.address
    keys_file    = null_resource.authorized_keys["db"].triggers.file
  }

  provisioner "local-exec" {
    command = "bash '${self.triggers.script}' host-up"
    environment = {
      LAB_ENV          = self.triggers.environment
      LAB_DIR          = self.triggers.lab_dir
      LAB_OWNER        = self.triggers.owner
      LAB_BRIDGE       = self.triggers.bridge
      LAB_PRIVATE_CIDR = self.triggers.private_cidr
      LAB_HOST         = self.triggers.host
      LAB_NAMESPACE    = self.triggers.namespace
      LAB_LINK         = self.triggers.link
      LAB_ADDRESS      = self.triggers.address
      LAB_KEYS_FILE    = self.triggers.keys_file
      LAB_FORWARDING   = "no"
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "bash '${self.triggers.script}' host-down"
    environment = {
      LAB_ENV       = self.triggers.environment
      LAB_DIR       = self.triggers.lab_dir
      LAB_OWNER     = self.triggers.owner
      LAB_HOST      = self.triggers.host
      LAB_NAMESPACE = self.triggers.namespace
      LAB_LINK      = self.triggers.link
      LAB_ADDRESS   = self.triggers.address
    }
  }
}
