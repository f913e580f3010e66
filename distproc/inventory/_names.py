"""Which ``ansible_*`` and ``distproc_*`` variable names an inventory may use.

A misspelt name is silently a different variable: ``ansible_hots: 10.0.0.5``
would leave the host reached by its inventory name, ``distproc_gpu: all`` would
run a job without its GPUs. So a name with either prefix must be one distproc
reads or one Ansible documents; anything else is refused with the nearest
known name. Other names are the user's own and stay allowed.
"""

from __future__ import annotations

import difflib


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Every ``distproc_*`` variable distproc reads. Any other ``distproc_`` name is
#: refused as a likely typo, since a misspelt ``distproc_gpus`` would otherwise
#: run a job without its GPUs.
KNOWN_DISTPROC_VARIABLES = frozenset(
    {
        "distproc_instance_type",
        "distproc_gpus",
        "distproc_gpu_mode",
        "distproc_docker_command",
        "distproc_docker_host",
        "distproc_work_dir",
        "distproc_private_address",
        "distproc_python",
        "distproc_known_hosts",
        "distproc_s3_endpoint_url",
        "distproc_aws_region",
        "distproc_memory_limit",
        # Read by the provisioning playbook (ansible/), not by distproc: accepted so
        # one inventory serves both.
        "distproc_install_packages",
    }
)

#: The ``ansible_*`` variables distproc reads (docs/inventory.md has what each does).
USED_ANSIBLE_VARIABLES = _words(
    "ansible_host ansible_ssh_host ansible_port ansible_ssh_port ansible_user ansible_ssh_user "
    "ansible_ssh_private_key_file ansible_private_key_file ansible_connection ansible_python_interpreter "
    "ansible_group_priority"
)

#: Ansible's own host variables that distproc accepts and ignores: the behavioural
#: inventory parameters of Ansible's "Connecting to hosts" page, and every
#: ``vars:`` name in ansible-core 2.19's connection, become and shell plugins and
#: its base configuration (ansible/config/base.yml, MAGIC_VARIABLE_MAPPING).
IGNORED_ANSIBLE_VARIABLES = _words(
    """
    ansible_password ansible_ssh_pass ansible_ssh_password ansible_private_key ansible_ssh_private_key
    ansible_private_key_passphrase ansible_ssh_private_key_passphrase
    ansible_ssh_common_args ansible_ssh_extra_args ansible_sftp_extra_args ansible_scp_extra_args ansible_ssh_args
    ansible_ssh_executable ansible_sftp_executable ansible_scp_executable ansible_sftp_batch_mode
    ansible_ssh_pipelining ansible_pipelining ansible_ssh_timeout ansible_timeout ansible_ssh_retries
    ansible_ssh_transfer_method ansible_ssh_use_tty ansible_ssh_verbosity ansible_ssh_password_mechanism
    ansible_ssh_pkcs11_provider ansible_sshpass_prompt ansible_control_path ansible_control_path_dir
    ansible_host_key_checking ansible_ssh_host_key_checking ansible_scp_if_ssh
    ansible_become ansible_become_method ansible_become_user ansible_become_pass ansible_become_password
    ansible_become_exe ansible_become_flags
    ansible_shell_type ansible_shell_executable ansible_module_compression ansible_remote_tmp
    ansible_async_dir ansible_admin_users ansible_common_remote_group ansible_system_tmpdirs
    ansible_shell_allow_world_readable_temp ansible_interpreter_python_fallback
    ansible_python_module_rlimit_nofile ansible_no_target_syslog ansible_target_log_info
    ansible_deprecation_warnings ansible_facts_modules ansible_win_async_startup_timeout
    ansible_connection_user ansible_network_os ansible_docker_extra_args ansible_rsync_path
    ansible_connect_timeout ansible_command_timeout
    ansible_local_become_strip_preamble ansible_local_become_success_timeout ansible_su_prompt_l10n
    """
)

#: Families of Ansible variables, by prefix: one per connection plugin (core's and
#: the common collections'), per become method, and the url lookup's options.
#: Each family's members are many and plugin-versioned, so the prefix is trusted.
ANSIBLE_FAMILIES = (
    "ansible_paramiko_",
    "ansible_libssh_",
    "ansible_winrm_",
    "ansible_psrp_",
    "ansible_docker_",
    "ansible_podman_",
    "ansible_buildah_",
    "ansible_kubectl_",
    "ansible_aws_ssm_",
    "ansible_lxd_",
    "ansible_incus_",
    "ansible_chroot_",
    "ansible_jail_",
    "ansible_zone_",
    "ansible_network_",
    "ansible_persistent_",
    "ansible_httpapi_",
    "ansible_netconf_",
    "ansible_sudo_",
    "ansible_su_",
    "ansible_runas_",
    "ansible_doas_",
    "ansible_dzdo_",
    "ansible_pbrun_",
    "ansible_pfexec_",
    "ansible_pmrun_",
    "ansible_ksu_",
    "ansible_machinectl_",
    "ansible_sesu_",
    "ansible_sudosu_",
    "ansible_lookup_url_",
)

_KNOWN = KNOWN_DISTPROC_VARIABLES | USED_ANSIBLE_VARIABLES | IGNORED_ANSIBLE_VARIABLES


def unknown_variable(name: str) -> str | None:
    """Why ``name`` is refused, or None if it is known or not prefixed ``ansible_``/``distproc_``.

    >>> unknown_variable("ansible_hots")  # doctest: +ELLIPSIS
    'ansible_hots is not a variable Ansible or distproc knows; did you mean ansible_host? (...)'
    >>> unknown_variable("ansible_become") is None, unknown_variable("rack") is None
    (True, True)
    """
    if name in _KNOWN:
        return None
    if name.startswith("distproc_"):
        close = difflib.get_close_matches(name, KNOWN_DISTPROC_VARIABLES, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        known = ", ".join(sorted(KNOWN_DISTPROC_VARIABLES))
        return f"{name} is not a variable distproc knows{hint} (known: {known})"
    if not name.startswith("ansible_"):
        return None
    # ansible_<language>_interpreter: the interpreter for that language's modules.
    if name.startswith(ANSIBLE_FAMILIES) or (name.endswith("_interpreter") and name.count("_") == 2):
        return None
    close = difflib.get_close_matches(name, sorted(_KNOWN), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return (
        f"{name} is not a variable Ansible or distproc knows{hint} "
        "(a variable of your own must not start with ansible_ or distproc_)"
    )
